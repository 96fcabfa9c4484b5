//! The engine: `handle` decides, `apply` changes state. Every state change goes through
//! `apply`, so replaying the journal's events through `apply` rebuilds the same engine.

use super::types::*;

/// The floor and agenda of one meeting. Pure: no I/O, no clock; time is an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    settings: Settings,
    /// Live requests by id (final ones are dropped).
    requests: std::collections::BTreeMap<RequestId, Request>,
    /// Granted request ids, in grant order.
    holders: Vec<RequestId>,
    /// Pending request ids, in request order.
    pending: Vec<RequestId>,
    /// The speakers list.
    queue: Vec<RequestId>,
    /// The reply list.
    replies: Vec<RequestId>,
    next_request: RequestId,
    next_room: u64,
    items: Vec<Item>,
    /// Index into `items` of the running or paused item.
    current: Option<usize>,
    planned_start: Option<Millis>,
    first_started_at: Option<Millis>,
    item_warning_ms: i64,
    timer_message: Option<String>,
}

/// Longest accepted name or delegation typed for an in-room speaker.
pub const MAX_NAME_LEN: usize = 100;
/// Longest timer message.
pub const MAX_TIMER_MESSAGE: usize = 280;
/// Most minutes one extension may add.
pub const MAX_EXTEND_MINUTES: u32 = 120;

impl Engine {
    /// A fresh engine with its agenda plan and settings.
    pub fn new(
        settings: Settings,
        plan: Vec<ItemPlan>,
        planned_start: Option<Millis>,
        item_warning_ms: i64,
    ) -> Engine {
        Engine {
            settings,
            requests: Default::default(),
            holders: Vec::new(),
            pending: Vec::new(),
            queue: Vec::new(),
            replies: Vec::new(),
            next_request: 1,
            next_room: 1,
            items: plan
                .into_iter()
                .map(|plan| Item {
                    plan,
                    state: ItemState::Planned,
                    extended_ms: 0,
                    started_at: None,
                    deadline: None,
                    remaining_ms: None,
                    ended_at: None,
                    overrun_ms: None,
                    warned: false,
                    overran: false,
                })
                .collect(),
            current: None,
            planned_start,
            first_started_at: None,
            item_warning_ms,
            timer_message: None,
        }
    }

    // ----- read access -------------------------------------------------------------------

    /// Settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// A live request.
    pub fn request(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(&id)
    }
    /// Holders in grant order.
    pub fn holders(&self) -> impl Iterator<Item = &Request> {
        self.holders.iter().filter_map(|id| self.requests.get(id))
    }
    /// Pending requests.
    pub fn pending(&self) -> impl Iterator<Item = &Request> {
        self.pending.iter().filter_map(|id| self.requests.get(id))
    }
    /// A list in order.
    pub fn list(&self, list: List) -> impl Iterator<Item = &Request> {
        self.list_ids(list)
            .iter()
            .filter_map(|id| self.requests.get(id))
    }
    /// 1-based position of a queued request in its list.
    pub fn position(&self, id: RequestId) -> Option<u32> {
        let r = self.requests.get(&id)?;
        if r.state != State::Accepted {
            return None;
        }
        self.list_ids(r.list)
            .iter()
            .position(|x| *x == id)
            .map(|p| p as u32 + 1)
    }
    /// Every live request.
    pub fn requests(&self) -> impl Iterator<Item = &Request> {
        self.requests.values()
    }
    /// How long before an item's deadline its wrap-up phase starts (`item_warning`); None: no
    /// wrap-up phase.
    pub fn item_warning_ms(&self) -> Option<i64> {
        (self.item_warning_ms > 0).then_some(self.item_warning_ms)
    }
    /// Agenda items in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }
    /// The running or paused item.
    pub fn current_item(&self) -> Option<&Item> {
        self.current.map(|i| &self.items[i])
    }
    /// Planned start of the event.
    pub fn planned_start(&self) -> Option<Millis> {
        self.planned_start
    }
    /// The last timer message.
    pub fn timer_message(&self) -> Option<&str> {
        self.timer_message.as_deref()
    }
    /// Whether the participant's audio may pass the floor gate: they hold the floor.
    pub fn holds_floor(&self, participant: &str) -> bool {
        self.holders()
            .any(|r| r.beneficiary.participant == participant)
    }
    /// The live request of a participant (as beneficiary), if any.
    pub fn live_request_of(&self, participant: &str) -> Option<&Request> {
        self.requests
            .values()
            .find(|r| r.beneficiary.participant == participant)
    }

    /// Planned end: planned start (or the actual start) plus every item's planned time.
    pub fn planned_end(&self) -> Option<Millis> {
        let start = self.planned_start.or(self.first_started_at)?;
        Some(start + self.items.iter().map(|i| i.plan.planned_ms).sum::<i64>())
    }

    /// Projected end at `now`: the current item's deadline (or now, in overrun) plus every
    /// item still planned.
    pub fn projected_end(&self, now: Millis) -> Millis {
        let mut t = match self.current_item() {
            Some(item) if item.state == ItemState::Running => {
                item.deadline.map_or(now, |d| d.max(now))
            }
            Some(item) => now + item.remaining_ms.unwrap_or(0).max(0),
            None => match (self.first_started_at, self.planned_start) {
                (None, Some(start)) if start > now => start,
                _ => now,
            },
        };
        for item in &self.items {
            if item.state == ItemState::Planned {
                t += item.plan.planned_ms + item.extended_ms;
            }
        }
        t
    }

    /// The earliest time at which [`Engine::tick`] has something to announce.
    pub fn next_deadline(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut consider = |t: Millis| next = Some(next.map_or(t, |n: Millis| n.min(t)));
        for r in self.holders() {
            if let Some(d) = r.deadline {
                if !r.warned {
                    if let Some(w) = r.warning_ms {
                        consider(d - w);
                    }
                }
                if !r.overran {
                    consider(d);
                }
            }
        }
        if let Some(item) = self.current_item() {
            if let (ItemState::Running, Some(d)) = (item.state, item.deadline) {
                if !item.warned && self.item_warning_ms > 0 {
                    consider(d - self.item_warning_ms);
                }
                if !item.overran {
                    consider(d);
                }
            }
        }
        next
    }

    fn list_ids(&self, list: List) -> &Vec<RequestId> {
        match list {
            List::Main => &self.queue,
            List::Reply => &self.replies,
        }
    }

    fn list_ids_mut(&mut self, list: List) -> &mut Vec<RequestId> {
        match list {
            List::Main => &mut self.queue,
            List::Reply => &mut self.replies,
        }
    }

    fn counting_holders(&self) -> usize {
        self.holders().filter(|r| r.counts()).count()
    }

    fn find_item(&self, id: &str) -> Result<usize, FloorError> {
        self.items
            .iter()
            .position(|i| i.plan.id == id)
            .ok_or_else(|| FloorError::NotFound(format!("no agenda item {id:?}")))
    }

    fn live(&self, id: RequestId) -> Result<&Request, FloorError> {
        self.requests
            .get(&id)
            .ok_or_else(|| FloorError::NotFound(format!("no live floor request {id}")))
    }

    // ----- decide ------------------------------------------------------------------------

    /// Handles one command at `now`. On success the returned events have been applied; on
    /// error nothing changed.
    pub fn handle(
        &mut self,
        actor: &Actor,
        command: Command,
        now: Millis,
    ) -> Result<Outcome, FloorError> {
        let mut out = Outcome::default();
        // Chair priority silences the floor on purpose; after any other change the open
        // policy serves waiting requests if a microphone is free.
        let serve_queue = !matches!(command, Command::ChairPriority);
        match command {
            Command::RaiseHand { list } => {
                if let Some(r) = self.live_request_of(&actor.id) {
                    out.request = Some(r.id);
                    return Ok(out);
                }
                let beneficiary = Beneficiary {
                    participant: actor.id.clone(),
                    name: actor.name.clone(),
                    delegation: actor.delegation.clone(),
                    in_room: false,
                };
                let id = self.new_request(beneficiary, actor, list, now, &mut out);
                out.request = Some(id);
            }
            Command::RequestFor {
                name,
                delegation,
                list,
            } => {
                let name = name.trim().to_owned();
                let delegation = delegation.trim().to_owned();
                if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
                    return Err(FloorError::InvalidValue(format!(
                        "name must be 1 to {MAX_NAME_LEN} characters"
                    )));
                }
                if delegation.chars().count() > MAX_NAME_LEN {
                    return Err(FloorError::InvalidValue(format!(
                        "delegation must be at most {MAX_NAME_LEN} characters"
                    )));
                }
                let same = |r: &Request| {
                    r.beneficiary.in_room
                        && r.beneficiary.name.to_lowercase() == name.to_lowercase()
                        && r.beneficiary.delegation.to_lowercase() == delegation.to_lowercase()
                };
                if let Some(r) = self.requests.values().find(|r| same(r)) {
                    out.request = Some(r.id);
                    return Ok(out);
                }
                let beneficiary = Beneficiary {
                    participant: format!("room-{}", self.next_room),
                    name,
                    delegation,
                    in_room: true,
                };
                let requester = Actor {
                    chair: false,
                    ..actor.clone()
                };
                let id = self.new_request(beneficiary, &requester, list, now, &mut out);
                out.request = Some(id);
            }
            Command::LowerHand => {
                let id = self
                    .live_request_of(&actor.id)
                    .map(|r| r.id)
                    .ok_or_else(|| FloorError::NotFound("you have no live floor request".into()))?;
                self.withdraw(id, actor, now, &mut out);
            }
            Command::Cancel(id) => {
                let r = self.live(id)?;
                if !(actor.chair
                    || r.requested_by == actor.id
                    || r.beneficiary.participant == actor.id)
                {
                    return Err(FloorError::Forbidden(format!(
                        "request {id} was not made by you"
                    )));
                }
                self.withdraw(id, actor, now, &mut out);
            }
            Command::Accept(id) => {
                if self.live(id)?.state != State::Pending {
                    return Err(FloorError::InvalidState(format!(
                        "request {id} is not pending"
                    )));
                }
                self.emit(
                    Event::Accepted {
                        request: id,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
            }
            Command::Grant(id) => {
                let r = self.live(id)?;
                if r.state == State::Granted {
                    return Err(FloorError::InvalidState(format!(
                        "request {id} already holds the floor"
                    )));
                }
                let counts = r.counts();
                if counts {
                    self.make_room(Some(&actor.id), RevokeReason::Override, true, now, &mut out)?;
                }
                self.grant(id, Some(actor.id.clone()), None, now, &mut out);
            }
            Command::GiveFloor(beneficiary) => {
                let id = match self.live_request_of(&beneficiary.participant) {
                    Some(r) if r.state == State::Granted => {
                        return Err(FloorError::InvalidState(format!(
                            "{} already holds the floor",
                            beneficiary.name
                        )));
                    }
                    Some(r) => r.id,
                    None => {
                        if self.counting_holders() >= self.settings.max_speakers as usize
                            && self.settings.when_full == WhenFull::Wait
                        {
                            return Err(FloorError::MaxSpeakers(self.settings.max_speakers));
                        }
                        self.insert_request(
                            beneficiary,
                            &actor.id,
                            (List::Main, false, State::Accepted),
                            now,
                            &mut out,
                        )
                    }
                };
                self.make_room(Some(&actor.id), RevokeReason::Override, true, now, &mut out)?;
                self.grant(id, Some(actor.id.clone()), None, now, &mut out);
                out.request = Some(id);
            }
            Command::Deny(id) => {
                if self.live(id)?.state == State::Granted {
                    return Err(FloorError::InvalidState(format!(
                        "request {id} holds the floor: revoke it instead"
                    )));
                }
                self.emit(
                    Event::Denied {
                        request: id,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
            }
            Command::Revoke(id) => {
                if self.live(id)?.state != State::Granted {
                    return Err(FloorError::InvalidState(format!(
                        "request {id} does not hold the floor"
                    )));
                }
                self.emit(
                    Event::Revoked {
                        request: id,
                        by: Some(actor.id.clone()),
                        reason: RevokeReason::Chair,
                    },
                    now,
                    &mut out,
                );
                self.auto_grant(now, &mut out);
            }
            Command::Next(list) => {
                let first = match list {
                    Some(l) => self.list_ids(l).first().copied(),
                    None => self.replies.first().or_else(|| self.queue.first()).copied(),
                };
                let id =
                    first.ok_or_else(|| FloorError::InvalidState("nobody is waiting".into()))?;
                // "Next" is the congress system's shift: it always makes room.
                self.make_room(Some(&actor.id), RevokeReason::Chair, false, now, &mut out)?;
                self.grant(id, Some(actor.id.clone()), None, now, &mut out);
            }
            Command::Move(id, position) => {
                let r = self.live(id)?;
                if r.state != State::Accepted {
                    return Err(FloorError::InvalidState(format!(
                        "request {id} is not in a queue"
                    )));
                }
                if position == 0 {
                    return Err(FloorError::InvalidValue("positions start at 1".into()));
                }
                let len = self.list_ids(r.list).len() as u32;
                let position = position.min(len);
                if self.position(id) != Some(position) {
                    self.emit(
                        Event::Moved {
                            request: id,
                            position,
                            by: actor.id.clone(),
                        },
                        now,
                        &mut out,
                    );
                }
            }
            Command::LowerAllHands => {
                let requests: Vec<RequestId> = self
                    .pending
                    .iter()
                    .chain(&self.replies)
                    .chain(&self.queue)
                    .copied()
                    .collect();
                if !requests.is_empty() {
                    self.emit(
                        Event::HandsLowered {
                            requests,
                            by: actor.id.clone(),
                        },
                        now,
                        &mut out,
                    );
                }
            }
            Command::ChairPriority => {
                self.emit(
                    Event::ChairPriority {
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
                let others: Vec<RequestId> =
                    self.holders().filter(|r| !r.chair).map(|r| r.id).collect();
                for request in others {
                    self.emit(
                        Event::Revoked {
                            request,
                            by: Some(actor.id.clone()),
                            reason: RevokeReason::ChairPriority,
                        },
                        now,
                        &mut out,
                    );
                }
            }
            Command::SetFloor(change) => {
                let settings = self.merged_settings(&change)?;
                self.emit(
                    Event::SettingsChanged {
                        settings,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
                // Lowering the microphone count cuts the longest speakers.
                while self.counting_holders() > self.settings.max_speakers as usize {
                    self.cut_longest(Some(&actor.id), RevokeReason::Override, now, &mut out);
                }
                self.auto_grant(now, &mut out);
            }
            Command::AgendaStart(item) => {
                if let Some(cur) = self.current_item() {
                    return Err(FloorError::InvalidState(format!(
                        "item {:?} is still open: end it first, or jump",
                        cur.plan.id
                    )));
                }
                let idx = match item {
                    Some(id) => self.find_item(&id)?,
                    None => self
                        .items
                        .iter()
                        .position(|i| i.state == ItemState::Planned)
                        .ok_or_else(|| {
                            FloorError::InvalidState("no planned item is left".into())
                        })?,
                };
                self.start_item(idx, actor, now, &mut out)?;
            }
            Command::AgendaPause => {
                let item = self.current_in(ItemState::Running, "running")?;
                self.emit(
                    Event::ItemPaused {
                        item,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
            }
            Command::AgendaResume => {
                let item = self.current_in(ItemState::Paused, "paused")?;
                self.emit(
                    Event::ItemResumed {
                        item,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
            }
            Command::AgendaExtend(minutes) => {
                if minutes == 0 || minutes > MAX_EXTEND_MINUTES {
                    return Err(FloorError::InvalidValue(format!(
                        "extend by 1 to {MAX_EXTEND_MINUTES} minutes"
                    )));
                }
                let item = self
                    .current_item()
                    .map(|i| i.plan.id.clone())
                    .ok_or_else(|| FloorError::InvalidState("no item is open".into()))?;
                self.emit(
                    Event::ItemExtended {
                        item,
                        minutes,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
            }
            Command::AgendaEnd => {
                if self.current.is_none() {
                    return Err(FloorError::InvalidState("no item is open".into()));
                }
                self.end_current(actor, now, &mut out);
            }
            Command::AgendaSkip(id) => {
                let idx = self.find_item(&id)?;
                if self.items[idx].state != ItemState::Planned {
                    return Err(FloorError::InvalidState(format!(
                        "item {id:?} is not planned"
                    )));
                }
                self.emit(
                    Event::ItemSkipped {
                        item: id,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
            }
            Command::AgendaMove(id, position) => {
                let idx = self.find_item(&id)?;
                if position == 0 {
                    return Err(FloorError::InvalidValue("positions start at 1".into()));
                }
                let position = position.min(self.items.len() as u32);
                if idx as u32 + 1 != position {
                    self.emit(
                        Event::ItemMoved {
                            item: id,
                            position,
                            by: actor.id.clone(),
                        },
                        now,
                        &mut out,
                    );
                }
            }
            Command::AgendaJump(id) => {
                let idx = self.find_item(&id)?;
                if self.current == Some(idx) {
                    return Err(FloorError::InvalidState(format!(
                        "item {id:?} is already open"
                    )));
                }
                self.check_startable(idx)?;
                if self.current.is_some() {
                    self.end_current(actor, now, &mut out);
                }
                self.start_item(idx, actor, now, &mut out)?;
            }
            Command::TimerMessage(text) => {
                if text.chars().count() > MAX_TIMER_MESSAGE {
                    return Err(FloorError::InvalidValue(format!(
                        "timer message is limited to {MAX_TIMER_MESSAGE} characters"
                    )));
                }
                self.emit(
                    Event::TimerMessage {
                        text,
                        by: actor.id.clone(),
                    },
                    now,
                    &mut out,
                );
            }
        }
        if serve_queue && !out.events.is_empty() {
            self.auto_grant(now, &mut out);
        }
        Ok(out)
    }

    /// Announces what time has brought: warnings, overruns and auto-revocations.
    pub fn tick(&mut self, now: Millis) -> Vec<Event> {
        let mut out = Outcome::default();
        let due: Vec<(RequestId, bool, bool)> = self
            .holders()
            .filter_map(|r| {
                let d = r.deadline?;
                let warn = !r.warned && r.warning_ms.is_some_and(|w| now >= d - w);
                let over = !r.overran && now >= d;
                (warn || over).then_some((r.id, warn, over))
            })
            .collect();
        let mut revoked = false;
        for (request, warn, over) in due {
            if warn {
                self.emit(Event::SpeakingWarning { request }, now, &mut out);
            }
            if over {
                self.emit(Event::SpeakingOverrun { request }, now, &mut out);
                let slot = self
                    .requests
                    .get(&request)
                    .is_some_and(|r| r.slot.is_some());
                if self.settings.auto_revoke && !slot {
                    self.emit(
                        Event::Revoked {
                            request,
                            by: None,
                            reason: RevokeReason::LimitReached,
                        },
                        now,
                        &mut out,
                    );
                    revoked = true;
                }
            }
        }
        if revoked {
            self.auto_grant(now, &mut out);
        }
        if let Some(item) = self.current_item() {
            if let (ItemState::Running, Some(d)) = (item.state, item.deadline) {
                let id = item.plan.id.clone();
                let warn =
                    !item.warned && self.item_warning_ms > 0 && now >= d - self.item_warning_ms;
                let over = !item.overran && now >= d;
                if warn {
                    self.emit(Event::ItemWarning { item: id.clone() }, now, &mut out);
                }
                if over {
                    self.emit(Event::ItemOverrun { item: id }, now, &mut out);
                }
            }
        }
        out.events
    }

    /// A remote participant is gone for good (left on purpose, or away longer than the
    /// resume grace period): the floor they hold is revoked (reason `left`, by the server)
    /// and their waiting requests are cancelled (by them: withdrawn on their behalf).
    /// Requests for someone in the room are never touched: nobody in the room disconnects.
    /// Under the open policy the freed microphones go to the next in line.
    pub fn participant_gone(&mut self, participant: &str, now: Millis) -> Vec<Event> {
        let mut out = Outcome::default();
        let theirs: Vec<(RequestId, bool)> = self
            .requests
            .values()
            .filter(|r| r.beneficiary.participant == participant && !r.beneficiary.in_room)
            .filter_map(|r| match r.state {
                State::Pending | State::Accepted => Some((r.id, false)),
                State::Granted => Some((r.id, true)),
                _ => None,
            })
            .collect();
        for (request, granted) in theirs {
            let event = if granted {
                Event::Revoked {
                    request,
                    by: None,
                    reason: RevokeReason::Left,
                }
            } else {
                Event::Cancelled {
                    request,
                    by: participant.to_owned(),
                }
            };
            self.emit(event, now, &mut out);
        }
        if !out.events.is_empty() {
            self.auto_grant(now, &mut out);
        }
        out.events
    }

    // ----- decide helpers (each emits) ---------------------------------------------------

    fn new_request(
        &mut self,
        beneficiary: Beneficiary,
        actor: &Actor,
        list: List,
        now: Millis,
        out: &mut Outcome,
    ) -> RequestId {
        let state = if self.settings.policy == Policy::Moderated
            && self.settings.screen_requests
            && !actor.chair
        {
            State::Pending
        } else {
            State::Accepted
        };
        let id = self.insert_request(beneficiary, &actor.id, (list, actor.chair, state), now, out);
        if actor.chair {
            // The chair's microphone never counts: granted at once.
            self.grant(id, None, None, now, out);
        } else if self.settings.policy == Policy::Open {
            if self.counting_holders() >= self.settings.max_speakers as usize
                && self.settings.when_full == WhenFull::Override
            {
                self.cut_longest(None, RevokeReason::Override, now, out);
                self.grant(id, None, None, now, out);
            }
            self.auto_grant(now, out);
        }
        id
    }

    /// Emits a new request and returns its id.
    fn insert_request(
        &mut self,
        beneficiary: Beneficiary,
        requested_by: &str,
        (list, chair, state): (List, bool, State),
        now: Millis,
        out: &mut Outcome,
    ) -> RequestId {
        let id = self.next_request;
        let request = Request {
            id,
            beneficiary,
            requested_by: requested_by.to_owned(),
            list,
            state,
            requested_at: now,
            granted_at: None,
            deadline: None,
            paused_remaining: None,
            limit_ms: None,
            warning_ms: None,
            slot: None,
            chair,
            warned: false,
            overran: false,
        };
        self.emit(Event::Requested(Box::new(request)), now, out);
        id
    }

    fn withdraw(&mut self, id: RequestId, actor: &Actor, now: Millis, out: &mut Outcome) {
        let granted = self.requests.get(&id).map(|r| r.state) == Some(State::Granted);
        let by = actor.id.clone();
        let event = if granted {
            Event::Released { request: id, by }
        } else {
            Event::Cancelled { request: id, by }
        };
        self.emit(event, now, out);
        self.auto_grant(now, out);
    }

    /// Frees a microphone if the floor is full: cuts the longest speaker when `respect_wait`
    /// is false or the floor is in override mode; otherwise refuses.
    fn make_room(
        &mut self,
        by: Option<&str>,
        reason: RevokeReason,
        respect_wait: bool,
        now: Millis,
        out: &mut Outcome,
    ) -> Result<(), FloorError> {
        if self.counting_holders() < self.settings.max_speakers as usize {
            return Ok(());
        }
        if respect_wait && self.settings.when_full == WhenFull::Wait {
            return Err(FloorError::MaxSpeakers(self.settings.max_speakers));
        }
        self.cut_longest(by, reason, now, out);
        Ok(())
    }

    fn cut_longest(
        &mut self,
        by: Option<&str>,
        reason: RevokeReason,
        now: Millis,
        out: &mut Outcome,
    ) {
        // Holders are kept in grant order, so the first counting one has spoken longest.
        let longest = self.holders().find(|r| r.counts()).map(|r| r.id);
        if let Some(request) = longest {
            self.emit(
                Event::Revoked {
                    request,
                    by: by.map(str::to_owned),
                    reason,
                },
                now,
                out,
            );
        }
    }

    fn grant(
        &mut self,
        id: RequestId,
        by: Option<String>,
        slot: Option<(String, i64)>,
        now: Millis,
        out: &mut Outcome,
    ) {
        let (limit_ms, warning_ms, slot) = match slot {
            Some((item, limit)) => (Some(limit), Some(self.item_warning_ms), Some(item)),
            None => {
                let limit = match self.current_item() {
                    Some(i) if i.plan.kind == ItemKind::Dialogue => i
                        .plan
                        .intervention_ms
                        .unwrap_or(self.settings.speaking_limit_ms),
                    _ => self.settings.speaking_limit_ms,
                };
                let is_chair = self.requests.get(&id).is_some_and(|r| r.chair);
                if limit > 0 && !is_chair {
                    (Some(limit), Some(self.settings.warning_ms), None)
                } else {
                    (None, None, None)
                }
            }
        };
        self.emit(
            Event::Granted {
                request: id,
                by,
                limit_ms,
                warning_ms: warning_ms.filter(|w| *w > 0),
                slot,
            },
            now,
            out,
        );
    }

    /// Open policy: grant waiting requests (reply list first) while microphones are free.
    fn auto_grant(&mut self, now: Millis, out: &mut Outcome) {
        if self.settings.policy != Policy::Open {
            return;
        }
        while self.counting_holders() < self.settings.max_speakers as usize {
            let Some(id) = self.replies.first().or_else(|| self.queue.first()).copied() else {
                return;
            };
            self.grant(id, None, None, now, out);
        }
    }

    fn current_in(&self, state: ItemState, word: &str) -> Result<String, FloorError> {
        match self.current_item() {
            Some(i) if i.state == state => Ok(i.plan.id.clone()),
            _ => Err(FloorError::InvalidState(format!("no item is {word}"))),
        }
    }

    fn check_startable(&self, idx: usize) -> Result<(), FloorError> {
        let item = &self.items[idx];
        match item.state {
            ItemState::Planned | ItemState::Skipped => Ok(()),
            _ => Err(FloorError::InvalidState(format!(
                "item {:?} has already been held",
                item.plan.id
            ))),
        }
    }

    fn start_item(
        &mut self,
        idx: usize,
        actor: &Actor,
        now: Millis,
        out: &mut Outcome,
    ) -> Result<(), FloorError> {
        self.check_startable(idx)?;
        // A new item is a new floor context: open microphones close.
        self.revoke_all(Some(&actor.id), RevokeReason::AgendaChanged, now, out);
        let item = self.items[idx].clone();
        self.emit(
            Event::ItemStarted {
                item: item.plan.id.clone(),
                by: actor.id.clone(),
            },
            now,
            out,
        );
        if matches!(item.plan.kind, ItemKind::Presentation | ItemKind::Remarks) {
            let limit = item.plan.planned_ms + item.extended_ms;
            for (n, p) in item.plan.presenters.iter().enumerate() {
                let participant = p
                    .participant
                    .clone()
                    .unwrap_or_else(|| format!("lectern-{}-{}", item.plan.id, n + 1));
                let existing = self.live_request_of(&participant).map(|r| r.id);
                let id = match existing {
                    Some(id) => id,
                    None => {
                        let beneficiary = Beneficiary {
                            participant,
                            name: p.name.clone(),
                            delegation: p.organisation.clone(),
                            in_room: p.participant.is_none(),
                        };
                        self.insert_request(
                            beneficiary,
                            &actor.id,
                            (List::Main, false, State::Accepted),
                            now,
                            out,
                        )
                    }
                };
                self.grant(id, None, Some((item.plan.id.clone(), limit)), now, out);
            }
        }
        Ok(())
    }

    fn end_current(&mut self, actor: &Actor, now: Millis, out: &mut Outcome) {
        let Some(idx) = self.current else { return };
        self.revoke_all(Some(&actor.id), RevokeReason::AgendaChanged, now, out);
        self.emit(
            Event::ItemEnded {
                item: self.items[idx].plan.id.clone(),
                by: actor.id.clone(),
            },
            now,
            out,
        );
    }

    fn revoke_all(
        &mut self,
        by: Option<&str>,
        reason: RevokeReason,
        now: Millis,
        out: &mut Outcome,
    ) {
        // The chair keeps their microphone, unless it became a slot of the item that ends.
        let ids: Vec<RequestId> = self
            .holders()
            .filter(|r| !r.chair || r.slot.is_some())
            .map(|r| r.id)
            .collect();
        for request in ids {
            self.emit(
                Event::Revoked {
                    request,
                    by: by.map(str::to_owned),
                    reason,
                },
                now,
                out,
            );
        }
    }

    fn merged_settings(&self, c: &SettingsChange) -> Result<Settings, FloorError> {
        let mut s = self.settings.clone();
        if let Some(p) = c.policy {
            s.policy = p;
        }
        if let Some(n) = c.max_speakers {
            if !(1..=10).contains(&n) {
                return Err(FloorError::InvalidValue(format!(
                    "max_speakers must be between 1 and 10 (got {n})"
                )));
            }
            s.max_speakers = n;
        }
        if let Some(w) = c.when_full {
            s.when_full = w;
        }
        if let Some(l) = c.speaking_limit_secs {
            if l > 3600 {
                return Err(FloorError::InvalidValue(format!(
                    "speaking_limit_secs must be at most 3600 (got {l})"
                )));
            }
            s.speaking_limit_ms = i64::from(l) * 1000;
        }
        if let Some(w) = c.warning_secs {
            s.warning_ms = i64::from(w) * 1000;
        }
        if s.speaking_limit_ms > 0 && s.warning_ms >= s.speaking_limit_ms {
            return Err(FloorError::InvalidValue(
                "warning_secs must be shorter than speaking_limit_secs".into(),
            ));
        }
        if let Some(a) = c.auto_revoke {
            s.auto_revoke = a;
        }
        if let Some(sr) = c.screen_requests {
            s.screen_requests = sr;
        }
        Ok(s)
    }

    fn emit(&mut self, event: Event, now: Millis, out: &mut Outcome) {
        self.apply(&event, now);
        out.events.push(event);
    }

    // ----- apply -------------------------------------------------------------------------

    /// Applies one event that happened at `at`. Used by `handle` and by journal replay. An
    /// event naming something unknown (a damaged journal) is ignored rather than panicking.
    pub fn apply(&mut self, event: &Event, at: Millis) {
        match event {
            Event::Requested(r) => {
                let mut r = (**r).clone();
                self.next_request = self.next_request.max(r.id + 1);
                if let Some(n) = r
                    .beneficiary
                    .participant
                    .strip_prefix("room-")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    self.next_room = self.next_room.max(n + 1);
                }
                if r.state == State::Pending {
                    self.pending.push(r.id);
                } else {
                    r.state = State::Accepted;
                    self.list_ids_mut(r.list).push(r.id);
                }
                self.requests.insert(r.id, r);
            }
            Event::Accepted { request, .. } => {
                if let Some(r) = self.requests.get_mut(request) {
                    r.state = State::Accepted;
                    let list = r.list;
                    self.pending.retain(|x| x != request);
                    self.list_ids_mut(list).push(*request);
                }
            }
            Event::Granted {
                request,
                limit_ms,
                warning_ms,
                slot,
                ..
            } => {
                self.unlist(*request);
                let paused = slot
                    .as_ref()
                    .and_then(|s| self.items.iter().find(|i| &i.plan.id == s))
                    .is_some_and(|i| i.state == ItemState::Paused);
                if let Some(r) = self.requests.get_mut(request) {
                    r.state = State::Granted;
                    r.granted_at = Some(at);
                    r.limit_ms = *limit_ms;
                    r.warning_ms = *warning_ms;
                    r.slot = slot.clone();
                    r.deadline = limit_ms.map(|l| at + l);
                    if paused {
                        r.paused_remaining = r.deadline.map(|d| d - at);
                        r.deadline = None;
                    }
                    r.warned = false;
                    r.overran = false;
                    // A holder granted again (the chair given a presenter's slot) stays once.
                    if !self.holders.contains(request) {
                        self.holders.push(*request);
                    }
                }
            }
            Event::Denied { request, .. }
            | Event::Cancelled { request, .. }
            | Event::Released { request, .. }
            | Event::Revoked { request, .. } => {
                self.unlist(*request);
                self.holders.retain(|x| x != request);
                self.requests.remove(request);
            }
            Event::Moved {
                request, position, ..
            } => {
                if let Some(list) = self.requests.get(request).map(|r| r.list) {
                    let ids = self.list_ids_mut(list);
                    if let Some(from) = ids.iter().position(|x| x == request) {
                        ids.remove(from);
                        let to = (*position as usize).saturating_sub(1).min(ids.len());
                        ids.insert(to, *request);
                    }
                }
            }
            Event::HandsLowered { requests, .. } => {
                for request in requests {
                    if self.requests.get(request).map(|r| r.state) != Some(State::Granted) {
                        self.unlist(*request);
                        self.requests.remove(request);
                    }
                }
            }
            Event::ChairPriority { .. } => {}
            Event::SpeakingWarning { request } => {
                if let Some(r) = self.requests.get_mut(request) {
                    r.warned = true;
                }
            }
            Event::SpeakingOverrun { request } => {
                if let Some(r) = self.requests.get_mut(request) {
                    r.warned = true;
                    r.overran = true;
                }
            }
            Event::SettingsChanged { settings, .. } => self.settings = settings.clone(),
            Event::ItemStarted { item, .. } => {
                if let Some(idx) = self.items.iter().position(|i| &i.plan.id == item) {
                    let it = &mut self.items[idx];
                    it.state = ItemState::Running;
                    it.started_at = Some(at);
                    it.deadline = Some(at + it.plan.planned_ms + it.extended_ms);
                    it.remaining_ms = None;
                    it.warned = false;
                    it.overran = false;
                    self.current = Some(idx);
                    self.first_started_at.get_or_insert(at);
                }
            }
            Event::ItemPaused { item, .. } => {
                if let Some(it) = self.items.iter_mut().find(|i| &i.plan.id == item) {
                    it.state = ItemState::Paused;
                    it.remaining_ms = it.deadline.map(|d| d - at);
                    it.deadline = None;
                }
                for r in self.requests.values_mut() {
                    if r.slot.as_ref() == Some(item) {
                        r.paused_remaining = r.deadline.map(|d| d - at);
                        r.deadline = None;
                    }
                }
            }
            Event::ItemResumed { item, .. } => {
                if let Some(it) = self.items.iter_mut().find(|i| &i.plan.id == item) {
                    it.state = ItemState::Running;
                    it.deadline = it.remaining_ms.map(|r| at + r);
                    it.remaining_ms = None;
                }
                for r in self.requests.values_mut() {
                    if r.slot.as_ref() == Some(item) {
                        r.deadline = r.paused_remaining.map(|p| at + p);
                        r.paused_remaining = None;
                    }
                }
            }
            Event::ItemExtended { item, minutes, .. } => {
                let add = i64::from(*minutes) * 60_000;
                let warning = self.item_warning_ms;
                if let Some(it) = self.items.iter_mut().find(|i| &i.plan.id == item) {
                    it.extended_ms += add;
                    // An extension re-arms announcements it moves into the future; it never
                    // marks one as made that `tick` has not announced yet.
                    if let Some(d) = it.deadline.as_mut() {
                        *d += add;
                        it.overran &= *d <= at;
                        it.warned &= *d - warning <= at;
                    }
                    if let Some(r) = it.remaining_ms.as_mut() {
                        *r += add;
                        it.overran &= *r <= 0;
                        it.warned &= *r <= warning;
                    }
                }
                for r in self.requests.values_mut() {
                    if r.slot.as_ref() == Some(item) {
                        r.limit_ms = r.limit_ms.map(|l| l + add);
                        if let Some(d) = r.deadline.as_mut() {
                            *d += add;
                            r.overran &= *d <= at;
                            r.warned &= *d - r.warning_ms.unwrap_or(0) <= at;
                        }
                        if let Some(p) = r.paused_remaining.as_mut() {
                            *p += add;
                            r.overran &= *p <= 0;
                            r.warned &= *p <= r.warning_ms.unwrap_or(0);
                        }
                    }
                }
            }
            Event::ItemEnded { item, .. } => {
                if let Some(idx) = self.items.iter().position(|i| &i.plan.id == item) {
                    let it = &mut self.items[idx];
                    let over = match (it.deadline, it.remaining_ms) {
                        (Some(d), _) => at - d,
                        (None, Some(r)) => -r,
                        _ => 0,
                    };
                    it.state = ItemState::Ended;
                    it.ended_at = Some(at);
                    it.overrun_ms = Some(over.max(0));
                    it.deadline = None;
                    it.remaining_ms = None;
                    if self.current == Some(idx) {
                        self.current = None;
                    }
                }
            }
            Event::ItemSkipped { item, .. } => {
                if let Some(it) = self.items.iter_mut().find(|i| &i.plan.id == item) {
                    it.state = ItemState::Skipped;
                }
            }
            Event::ItemMoved { item, position, .. } => {
                if let Some(from) = self.items.iter().position(|i| &i.plan.id == item) {
                    let current_id = self.current.map(|c| self.items[c].plan.id.clone());
                    let it = self.items.remove(from);
                    let to = (*position as usize).saturating_sub(1).min(self.items.len());
                    self.items.insert(to, it);
                    self.current =
                        current_id.and_then(|c| self.items.iter().position(|i| i.plan.id == c));
                }
            }
            Event::ItemWarning { item } => {
                if let Some(it) = self.items.iter_mut().find(|i| &i.plan.id == item) {
                    it.warned = true;
                }
            }
            Event::ItemOverrun { item } => {
                if let Some(it) = self.items.iter_mut().find(|i| &i.plan.id == item) {
                    it.warned = true;
                    it.overran = true;
                }
            }
            Event::TimerMessage { text, .. } => {
                self.timer_message = (!text.is_empty()).then(|| text.clone());
            }
        }
    }

    fn unlist(&mut self, id: RequestId) {
        self.pending.retain(|x| *x != id);
        self.queue.retain(|x| *x != id);
        self.replies.retain(|x| *x != id);
    }

    /// Checks the engine's invariants; used by tests and fuzzing. Returns the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let counting = self.counting_holders();
        if counting > self.settings.max_speakers as usize {
            return Err(format!(
                "{counting} counting holders > max {}",
                self.settings.max_speakers
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for r in self.requests.values() {
            if !seen.insert(r.beneficiary.participant.as_str()) {
                return Err(format!(
                    "two live requests for {}",
                    r.beneficiary.participant
                ));
            }
            if matches!(
                r.state,
                State::Released | State::Denied | State::Cancelled | State::Revoked
            ) {
                return Err(format!("final request {} still live", r.id));
            }
            let in_lists = self.holders.contains(&r.id) as u8
                + self.pending.contains(&r.id) as u8
                + self.queue.contains(&r.id) as u8
                + self.replies.contains(&r.id) as u8;
            if in_lists != 1 {
                return Err(format!("request {} is in {in_lists} lists", r.id));
            }
            let expected = match r.state {
                State::Granted => self.holders.contains(&r.id),
                State::Pending => self.pending.contains(&r.id),
                State::Accepted => self.list_ids(r.list).contains(&r.id),
                _ => false,
            };
            if !expected {
                return Err(format!("request {} is in the wrong list", r.id));
            }
            if let (Some(g), Some(d)) = (r.granted_at, r.deadline) {
                if d < g {
                    return Err(format!("request {} has a deadline before its grant", r.id));
                }
            }
            if r.granted_at.is_some_and(|g| g < r.requested_at) {
                return Err(format!("request {} granted before requested", r.id));
            }
        }
        for id in self
            .holders
            .iter()
            .chain(&self.pending)
            .chain(&self.queue)
            .chain(&self.replies)
        {
            if !self.requests.contains_key(id) {
                return Err(format!("list names unknown request {id}"));
            }
        }
        let open = self
            .items
            .iter()
            .filter(|i| matches!(i.state, ItemState::Running | ItemState::Paused))
            .count();
        if open > 1 || (open == 1) != self.current.is_some() {
            return Err(format!("{open} open items, current {:?}", self.current));
        }
        for i in &self.items {
            if let (Some(s), Some(e)) = (i.started_at, i.ended_at) {
                if e < s {
                    return Err(format!("item {} ends before it starts", i.plan.id));
                }
            }
            if i.overrun_ms.is_some_and(|o| o < 0) {
                return Err(format!("item {} has a negative overrun", i.plan.id));
            }
        }
        Ok(())
    }
}
