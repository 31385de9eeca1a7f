//! Receiving one message from a socket, whatever a peer sends.

use crate::error::{Error, Result};
use crate::wire::{self, Envelope, Line};

/// Reusable frames for receiving: the topic and body, and a scratch frame
/// that absorbs any further frames, so a peer sending a thousand frames
/// costs one frame of memory.
pub(crate) struct Inbox {
    topic: zmq::Message,
    body: zmq::Message,
    extra: zmq::Message,
    count: usize,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        Inbox {
            topic: zmq::Message::new(),
            body: zmq::Message::new(),
            extra: zmq::Message::new(),
            count: 0,
        }
    }

    /// Receives one whole message without waiting; false when none was
    /// waiting. The frames after the first are already here (ZeroMQ delivers
    /// a message whole), so reading them never waits.
    pub(crate) fn recv(&mut self, socket: &zmq::Socket) -> zmq::Result<bool> {
        match socket.recv(&mut self.topic, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(false),
            Err(e) => return Err(e),
        }
        self.count = 1;
        let mut more = self.topic.get_more();
        while more {
            let frame = if self.count == 1 {
                &mut self.body
            } else {
                &mut self.extra
            };
            socket.recv(frame, 0)?;
            self.count += 1;
            more = frame.get_more();
        }
        Ok(true)
    }

    /// Decodes the message last received.
    pub(crate) fn decode(&self, max_message_bytes: usize) -> Result<Envelope> {
        self.frames()?;
        wire::decode_pair(&self.topic, &self.body, max_message_bytes)
    }

    /// As [`decode`](Self::decode), into a compact [`Line`].
    pub(crate) fn decode_line(&self, max_message_bytes: usize) -> Result<Line> {
        self.frames()?;
        wire::decode_line(&self.topic, &self.body, max_message_bytes)
    }

    fn frames(&self) -> Result<()> {
        match self.count {
            2 => Ok(()),
            n => Err(Error::Frames(n)),
        }
    }

    /// The marker last received: its topic (`wire::MARK_PREFIX`).
    pub(crate) fn marker(&self) -> Option<&[u8]> {
        (self.count == 2 && self.body.is_empty()).then(|| &self.topic[..])
    }

    /// Takes the topic and body frames, to forward them without copying.
    pub(crate) fn take(&mut self) -> (zmq::Message, zmq::Message) {
        self.count = 0;
        (
            std::mem::replace(&mut self.topic, zmq::Message::new()),
            std::mem::replace(&mut self.body, zmq::Message::new()),
        )
    }
}
