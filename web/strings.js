// @ts-check
/**
 * Every string the pages show, in one place (English). To translate, copy this module and
 * replace the values; functions take the variable parts.
 * @module strings
 */

/** @param {number} n */
export function ordinal(n) {
  const s = ['th', 'st', 'nd', 'rd'];
  const v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

export const S = {
  appName: 'roundtable',

  // Connection
  conn: {
    idle: 'Not connected',
    connecting: 'Connecting…',
    open: 'Connected',
    reconnecting: 'Connection lost, reconnecting…',
    closed: 'Disconnected',
    /** @param {string} why */
    closedBecause: (why) => `Disconnected: ${why}`,
    replaced: 'This invitation was opened in another window or device. This window is no longer connected.',
    left: 'You left the meeting.',
    removed: 'The chair removed you from the meeting',
    removedHelp: 'This page is no longer connected and will not reconnect. If you think this is a mistake, contact the organisers.',
    reconnectAsked: 'The chair asked this page to reconnect. Reconnecting…',
    reconnected: 'Reconnected',
    noToken: 'This page needs an invitation link (…?token=…). Ask the organisers for yours.',
    /** What a page says when the server refuses its link, by error code (`other`: any else). */
    refused: {
      token_used: {
        title: 'This invitation link has already been used',
        help: 'Each link opens the meeting once, for one person on one device, and this one was opened before (perhaps it was forwarded). If it is yours, go back to the window where you joined, or ask the organisers for a new link.',
      },
      token_revoked: {
        title: 'This invitation was withdrawn',
        help: 'The organisers withdrew this link. If you think this is a mistake, contact them.',
      },
      token_expired: {
        title: 'This invitation has expired',
        help: 'Ask the organisers for a new link.',
      },
      other: {
        title: 'This invitation link does not work',
        help: 'Check that the whole link was copied, or ask the organisers for a new one.',
      },
    },
    rejoin: 'Rejoin',
  },
  media: {
    connecting: 'Connecting audio and video…',
    connected: 'Audio and video connected',
    reconnecting: 'Network changed: reconnecting audio and video…',
    failed: 'Audio and video could not connect. Retrying…',
    /** @param {string} why */
    failedBecause: (why) => `Audio and video: ${why}`,
    enableSound: 'Click to turn the sound on',
    soundBlocked: 'The browser blocked the sound until you click.',
  },

  // Roles (as shown)
  role: {
    moderator: 'Chair',
    delegate: 'Delegate',
    room: 'Room screen',
    technician: 'Technician',
    observer: 'Observer',
    assistant: 'Floor assistant',
  },

  // Common floor words
  floor: {
    speakingNow: 'Speaking now',
    nobodySpeaking: 'Nobody has the floor',
    queue: 'Speakers list',
    replies: 'Right of reply',
    pending: 'Waiting for the chair to accept',
    emptyQueue: 'Nobody is waiting',
    inRoom: 'in the room',
    connectionLost: 'connection lost: held for them',
    remote: 'remote',
    chair: 'Chair',
    /** @param {string} name @param {number} pos */
    queuedAnnounce: (name, pos) => `${name} is ${ordinal(pos)} in line`,
    /** @param {string} name */
    grantedAnnounce: (name) => `${name} has the floor`,
    /** @param {string} name */
    endedAnnounce: (name) => `${name} no longer has the floor`,
    /** @param {string} name */
    leftQueueAnnounce: (name) => `${name} left the speakers list`,
    policy: { moderated: 'Moderated: the chair gives the floor', open: 'Open: microphones open in turn' },
    next: 'Next',
  },

  // Agenda
  agenda: {
    title: 'Agenda',
    noItem: 'No agenda item is running',
    state: {
      planned: 'planned',
      running: 'running',
      paused: 'paused',
      ended: 'ended',
      skipped: 'skipped',
    },
    kind: { remarks: 'Remarks', presentation: 'Presentation', dialogue: 'Dialogue', break: 'Break' },
    plannedEnd: 'Planned end',
    projectedEnd: 'Projected end',
    /** @param {number} min */
    minutes: (min) => `${min} min`,
    /** @param {string} t */
    overrunBy: (t) => `over by ${t}`,
    atLectern: 'at the lectern',
  },

  // Timer phases (the lectern timer and every countdown)
  phase: {
    normal: 'Time remaining',
    wrapup: 'Please wrap up',
    danger: 'Time is almost up',
    overrun: 'Over time',
    paused: 'Paused',
    none: 'No time limit',
  },

  // Device check and the delegate's page
  delegate: {
    checkTitle: 'Check your microphone and camera',
    checkIntro: 'Choose your microphone and camera. Speak: the bar moves when the microphone hears you.',
    mic: 'Microphone',
    camera: 'Camera',
    noCamera: 'No camera (audio only)',
    level: 'Microphone level',
    join: 'Join the meeting',
    joining: 'Joining…',
    deviceError: 'Could not open your microphone or camera. Check the browser’s permission and try again.',
    retryDevices: 'Try again',
    roomVideo: 'The room',
    speakerVideo: 'Speaking',
    raise: 'Ask for the floor',
    raiseReply: 'Ask for a right of reply',
    lower: 'Withdraw my request',
    giveBack: 'Give the floor back',
    leave: 'Leave the meeting',
    youHaveFloor: 'You have the floor',
    micOpen: 'Your microphone is open: everyone hears you.',
    youAreNext: 'You are next',
    /** @param {number} pos */
    inLine: (pos) => `You are ${ordinal(pos)} in line`,
    /** @param {number} pos */
    inReplyLine: (pos) => `You are ${ordinal(pos)} in the reply list`,
    pendingAccept: 'Your request waits for the chair',
    mutedByModerator: 'Muted by the moderator',
    mutedHelp: 'Your microphone opens when the chair gives you the floor.',
    openFloor: 'Open floor: your microphone is on',
    muteSelf: 'Mute my microphone',
    unmuteSelf: 'Unmute my microphone',
    selfMuted: 'You muted your microphone',
    shortcuts: 'Keyboard: H ask for / withdraw the floor, M mute or unmute while speaking',
    preview: 'Your camera',
    lobbyNote: 'You can already see and hear the room while you check your devices.',
  },

  // Room screen
  room: {
    fullscreen: 'Full screen',
    exitFullscreen: 'Leave full screen',
    start: 'Start the room screen',
    waitingFloor: 'The floor is in the room',
    next: 'Next',
    cameraError: 'Room camera or microphone unavailable',
    publishing: 'Room camera and sound are sent',
    rejoining: 'Reconnecting…',
  },

  // Timer page
  timer: {
    title: 'Lectern timer',
    nothing: 'Waiting',
    message: 'Message from the chair',
  },

  // Chair's console
  mod: {
    title: 'Chair’s console',
    floorTitle: 'The floor',
    /** @param {number} n */
    micsAtMost: (n) => `${n} open microphone${n === 1 ? '' : 's'} at most`,
    assistantTitle: 'Floor assistant',
    agendaControls: 'Agenda',
    start: 'Start',
    startNext: 'Start next item',
    startThis: 'Start this item',
    pause: 'Pause',
    resume: 'Resume',
    extend1: '+1 min',
    extend5: '+5 min',
    end: 'End item',
    nextItem: 'Next item',
    skip: 'Skip',
    jump: 'Jump here',
    moveUp: 'Move up',
    moveDown: 'Move down',
    grant: 'Give the floor',
    deny: 'Deny',
    accept: 'Accept',
    revoke: 'Revoke',
    cancel: 'Remove',
    nextSpeaker: 'Next speaker',
    lowerAll: 'Lower all hands',
    lowerAllConfirm: 'Lower every raised hand? The speakers list and the reply list will be emptied.',
    chairPriority: 'Chair priority (mute all)',
    chairPriorityConfirm: 'Mute every speaker now?',
    takeFloor: 'Take the floor (chair)',
    releaseFloor: 'Release my floor',
    addInRoom: 'Add a speaker in the room',
    name: 'Name',
    delegation: 'Delegation',
    list: 'List',
    listMain: 'Speakers list',
    listReply: 'Right of reply',
    add: 'Add',
    floorSettings: 'Floor settings',
    policy: 'Mode',
    moderated: 'Moderated',
    open: 'Open',
    maxSpeakers: 'Open microphones at most',
    whenFull: 'When all are taken',
    wait: 'New speakers wait',
    override: 'Cut the longest speaker',
    speakingLimit: 'Speaking limit (seconds, 0 = none)',
    warning: 'Warning before the limit (seconds)',
    autoRevoke: 'Close the microphone at the limit',
    screen: 'Chair accepts each request first',
    apply: 'Apply',
    timerMessage: 'Message to the lectern timer',
    send: 'Send',
    clear: 'Clear',
    minutes: 'Minutes',
    minutesMd: 'Download minutes (Markdown)',
    minutesCsv: 'Download minutes (CSV)',
    participants: 'Participants',
    giveFloor: 'Give the floor',
    shortcuts: 'Keyboard shortcuts',
    shortcutList: [
      ['N', 'next speaker'],
      ['R', 'revoke the current speaker'],
      ['E', 'extend the current item by 1 minute'],
      ['P', 'pause or resume the item'],
      ['S', 'start the next item'],
      ['Alt+↑ / Alt+↓', 'move the selected request in the list'],
      ['?', 'show this list'],
    ],
    dragHint: 'Drag to reorder, or focus a row and press Alt+↑ / Alt+↓.',
    presence: { joined: 'online', left: 'left', connection_lost: 'connection lost', removed: 'removed' },
    holders: 'Speaking now',
    /** @param {string} name */
    moved: (name) => `${name} moved`,
    myRequests: 'Requests I made',
    timerLink: 'Open the lectern timer',
    connectedNow: 'Connected now',
    nobodyConnected: 'Nobody else is connected',
    /** @param {number} n */
    notConnected: (n) => `Not connected (${n})`,
    askReconnect: 'Ask to reconnect',
    /** @param {string} name */
    askReconnectLabel: (name) => `Ask ${name} to reconnect`,
    /** @param {string} name */
    askedReconnect: (name) => `${name} was asked to reconnect`,
    remove: 'Remove',
    /** @param {string} name */
    removeLabel: (name) => `Remove ${name} from the meeting`,
    /** @param {string} name */
    removeConfirm: (name) => `Remove ${name} from the meeting? Their page closes and their requests are cancelled.`,
    removeYes: 'Yes, remove',
    removeRevoke: 'Remove and revoke their invitation',
    removeNo: 'Keep',
    /** @param {string} name */
    removed: (name) => `${name} was removed from the meeting`,
    floorAlerts: 'Floor alerts',
    floorAlertAck: 'Acknowledge',
    /** @param {string} t */
    floorAlertEnded: (t) => `ended ${t}`,
    /** @param {string} kind @param {string} who */
    floorAlertLabel: (kind, who) => `Acknowledge: ${kind}, ${who}`,
  },

  observer: {
    title: 'Watching the meeting',
    listen: 'Listen and watch only',
  },

  // Stream health words (the technician's dashboard, the chair's floor alerts)
  health: {
    grade: { excellent: 'excellent', good: 'good', poor: 'poor' },
    cause: { loss: 'packet loss', delay: 'delay', bitrate: 'low bitrate', layer: 'lower layer', dry: 'no packets', freeze: 'video frozen' },
    kind: {
      dry: 'Stream stopped',
      frozen: 'Video frozen',
      loss: 'Packet loss',
      dead_mic: 'Silent microphone',
      sound_without_floor: 'Speaking without the floor',
      relay_only: 'Relay only (TURN)',
      cpu_high: 'Server CPU high',
    },
    direction: { up: 'sending', down: 'receiving' },
    candidate: { host: 'direct', srflx: 'via NAT', prflx: 'via NAT', relay: 'relay' },
    force: { auto: 'Auto', low: 'Low video', audio_only: 'Audio only' },
    forceLong: { auto: 'automatic', low: 'low video', audio_only: 'audio only' },
    limitation: { none: 'encoder not limited', cpu: 'encoder limited by CPU', bandwidth: 'encoder limited by bandwidth', other: 'encoder limited' },
    server: 'the server',
  },

  // The room technician's dashboard
  tech: {
    title: 'Technician',
    program: 'Room program',
    noProgram: 'No picture from the room yet',
    roomTitle: 'What the room sends',
    noRoom: 'The room is not connected',
    roomNotSending: 'The room is connected but sends nothing',
    roomReceives: 'The room receives',
    roomVideo: 'Picture',
    tableTitle: 'Stream health',
    tableCaption: 'Every participant with audio or video, room first. Scores with the last 5 minutes below them (dashed lines: 80 and 40). ↑ what they send, ↓ what they receive; video as height and frame rate (720p30: 720 pixels high, 30 frames a second).',
    col: {
      who: 'Participant',
      up: 'Sending',
      down: 'Receiving',
      loss: 'Loss %',
      jitter: 'Jitter ms',
      rtt: 'RTT ms',
      kbps: 'kbit/s',
      video: 'Video',
      network: 'Network',
      level: 'Mic level',
      actions: 'Actions',
    },
    upShort: '↑',
    downShort: '↓',
    upSr: 'sending',
    downSr: 'receiving',
    none: '—',
    notSending: 'not sending',
    notReceiving: 'not receiving',
    thisPage: 'this page',
    silent: 'silent',
    /** @param {number} db */
    dB: (db) => `−${db} dB`,
    level: 'Microphone level',
    /** @param {number} n */
    fps: (n) => `${n} fps`,
    /** @param {number} n */
    freezes: (n) => `${n} freeze${n === 1 ? '' : 's'}`,
    /** @param {number} ms */
    buffer: (ms) => `buffer ${ms} ms`,
    /** @param {number} kbps */
    estimate: (kbps) => `estimate ${kbps} kbit/s`,
    /** @param {number} mos */
    mos: (mos) => `MOS ${mos}`,
    /** @param {string} dir @param {number | undefined} now @param {number | undefined} min */
    sparkLabel: (dir, now, min) => (now === undefined ? `${dir}: no history yet` : `${dir}, last 5 minutes: now ${now}, lowest ${min}`),
    /** @param {number} pct */
    cpu: (pct) => `Server CPU ${pct} %`,
    cpuHigh: 'high',
    /** @param {string} time */
    updated: (time) => `Updated ${time}`,
    /** @param {number} s */
    stale: (s) => `No health report for ${s} s`,
    waiting: 'Waiting for the first health report…',
    /** @param {number} n */
    openAlerts: (n) => (n === 0 ? 'No open alerts' : `${n} open alert${n === 1 ? '' : 's'}`),
    /** @param {string} names */
    noMedia: (names) => `Connected without audio or video: ${names}`,
    keyframe: 'Keyframe',
    /** @param {string} name */
    keyframeLabel: (name) => `Ask ${name}’s camera for a keyframe`,
    /** @param {string} name */
    keyframeAsked: (name) => `Keyframe asked of ${name}`,
    /** @param {string} name */
    layerLabel: (name) => `What ${name} receives`,
    /** @param {string} what */
    receives: (what) => `Receives: ${what}`,
    /** @param {string} name @param {string} what */
    forceSet: (name, what) => `${name} now receives: ${what}`,
    reconnect: 'Reconnect',
    /** @param {string} name */
    reconnectLabel: (name) => `Ask ${name}’s page to reconnect`,
    /** @param {string} name */
    reconnectConfirm: (name) => `Ask ${name}’s page to reconnect? Their audio and video stop for a few seconds; their place in line is kept.`,
    reconnectYes: 'Yes, reconnect',
    reconnectNo: 'Cancel',
    /** @param {string} name */
    askedReconnect: (name) => `${name} was asked to reconnect`,
    listen: 'Listen',
    listenHelp: 'Program sound is off (so it cannot feed back into the room). Use headphones.',
    mute: 'Sound off',
    alerts: 'Alerts',
    noAlerts: 'No alerts so far',
    open: 'Open',
    ended: 'Ended',
    /** @param {string} t */
    cleared: (t) => `Cleared ${t}`,
    /** @param {string} who @param {string} t */
    acked: (who, t) => `Acknowledged by ${who} at ${t}`,
    ack: 'Acknowledge',
    /** @param {string} kind @param {string} who */
    ackLabel: (kind, who) => `Acknowledge: ${kind}, ${who}`,
    /** @param {string} kind @param {string} who @param {string} detail */
    alertAnnounce: (kind, who, detail) => `Alert: ${kind}, ${who}. ${detail}`,
    /** @param {number} n */
    alertsOpenAnnounce: (n) => `${n} alert${n === 1 ? '' : 's'} open`,
  },

  // Errors
  error: {
    /** @param {string} code @param {string} msg */
    refused: (code, msg) => `Refused (${code}): ${msg}`,
    dismiss: 'Dismiss',
  },
};
