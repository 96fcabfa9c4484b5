// @ts-check
/**
 * The page an invitation link gets when the server refuses its token (`/join`, `/timer`):
 * a used one-time link, a withdrawn or expired invitation, a damaged link. The server names
 * the refusal in `<meta name="rt-refusal" content="<code>" data-message="<message>">`; the
 * page says what it means and what to do (web/strings.js, `S.conn.refused`).
 */

import { showRefused } from './ui.js';

const meta = document.querySelector('meta[name="rt-refusal"]');
const code = meta?.getAttribute('content') ?? '';
const message = meta?.getAttribute('data-message') ?? '';
showRefused(code ? { code, message } : null);
