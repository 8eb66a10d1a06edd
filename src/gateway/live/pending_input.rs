//! Browser input the data channel's queue had no room for yet: kept in order and bounded in
//! bytes, so a paste that outruns the agent does not stop the session from reading the
//! browser's other events (its acknowledgements among them) until the bound is reached.

use std::collections::VecDeque;

use bytes::Bytes;

/// Input waiting at which browser events are no longer read: one message's worth (the
/// largest a browser may send), so at most twice this waits.
pub(super) const PENDING_INPUT_BYTES: usize = crate::gateway::config::WEBSOCKET_MAX_MESSAGE_BYTES;

/// Input waiting for the data channel, oldest first.
#[derive(Debug, Default)]
pub(super) struct PendingInput {
    queue: VecDeque<Bytes>,
    bytes: usize,
}

impl PendingInput {
    /// Nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Browser events wait: the input waiting reached [`PENDING_INPUT_BYTES`].
    pub(super) fn is_full(&self) -> bool {
        self.bytes >= PENDING_INPUT_BYTES
    }

    /// Adds a message behind what already waits.
    pub(super) fn push(&mut self, message: Bytes) {
        if !message.is_empty() {
            self.bytes += message.len();
            self.queue.push_back(message);
        }
    }

    /// Offers the oldest message to `send`, which takes what it can from its front.
    pub(super) fn send_front(&mut self, send: impl FnOnce(&mut Bytes)) {
        let _ = self.offer_front(|b| {
            send(b);
            Ok::<(), std::convert::Infallible>(())
        });
        self.release_if_empty();
    }

    /// Offers the messages in order to `send` until one is not taken whole (or `send`
    /// fails: the channel is gone, and everything waiting is dropped with it).
    pub(super) fn drain<E>(
        &mut self,
        mut send: impl FnMut(&mut Bytes) -> Result<(), E>,
    ) -> Result<(), E> {
        loop {
            match self.offer_front(&mut send) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.clear();
                    return Err(e);
                }
            }
        }
        self.release_if_empty();
        Ok(())
    }

    /// Offers the oldest message to `send` and counts what it took; whether it took the
    /// message whole (false when nothing waits).
    fn offer_front<E>(
        &mut self,
        send: impl FnOnce(&mut Bytes) -> Result<(), E>,
    ) -> Result<bool, E> {
        let Some(front) = self.queue.front_mut() else {
            return Ok(false);
        };
        let before = front.len();
        send(front)?;
        self.bytes -= before - front.len();
        if !front.is_empty() {
            return Ok(false);
        }
        self.queue.pop_front();
        Ok(true)
    }

    /// Drops everything waiting.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// An emptied queue keeps no room (a live session waits with nothing pending).
    fn release_if_empty(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `send` that takes at most `room` bytes in all, as a queue with room for that much.
    fn taking(room: &mut usize) -> impl FnMut(&mut Bytes) -> Result<(), ()> + '_ {
        move |message: &mut Bytes| {
            let n = message.len().min(*room);
            *room -= n;
            let _ = message.split_to(n);
            Ok(())
        }
    }

    #[test]
    fn input_leaves_in_order_as_room_comes_and_nothing_is_kept_once_sent() {
        let mut pending = PendingInput::default();
        pending.push(Bytes::from_static(b"abcdef"));
        pending.push(Bytes::from_static(b"gh"));
        let mut sent = Vec::new();
        pending.send_front(|m| sent.extend_from_slice(&m.split_to(4)));
        assert_eq!(sent, b"abcd");
        assert!(!pending.is_empty());
        let mut room = 3;
        pending.drain(taking(&mut room)).unwrap();
        assert_eq!(room, 0);
        assert_eq!(pending.queue, [Bytes::from_static(b"h")]);
        assert_eq!(pending.bytes, 1);
        let mut room = 10;
        pending.drain(taking(&mut room)).unwrap();
        assert!(pending.is_empty());
        assert_eq!(pending.bytes, 0);
        assert_eq!(
            pending.queue.capacity(),
            0,
            "an emptied queue keeps no room"
        );
    }

    #[test]
    fn events_wait_once_a_messages_worth_waits() {
        let mut pending = PendingInput::default();
        pending.push(Bytes::from(vec![b'x'; PENDING_INPUT_BYTES - 1]));
        assert!(!pending.is_full(), "an acknowledgement can still be read");
        pending.push(Bytes::from_static(b"y"));
        assert!(pending.is_full());
        let mut room = 1;
        pending.drain(taking(&mut room)).unwrap();
        assert!(!pending.is_full());
    }

    #[test]
    fn a_channel_that_is_gone_drops_what_waits() {
        let mut pending = PendingInput::default();
        pending.push(Bytes::from_static(b"abc"));
        pending.push(Bytes::new());
        assert_eq!(
            pending.queue.len(),
            1,
            "an empty message is nothing to send"
        );
        assert_eq!(pending.drain(|_| Err("closed")), Err("closed"));
        assert!(pending.is_empty());
        assert_eq!(pending.bytes, 0);
    }
}
