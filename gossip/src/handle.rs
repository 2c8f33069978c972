//! [`Handle`]: how the rest of the node talks to the network task, over a
//! bounded channel of commands.

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{GossipError, PeerInfo, Topic};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, GossipError>>;

pub(crate) enum Command {
    /// Gossip; the reply, if wanted, says whether anyone took it.
    Publish(Topic, Vec<u8>, Option<Reply<()>>),
    Dial(Multiaddr),
    Request(PeerId, Vec<u8>, Reply<Vec<u8>>),
    Ban(PeerId, String),
    Stop,
}

/// Commands waiting for the network task.
pub(crate) const COMMAND_QUEUE: usize = 1_024;

/// Commands to the network task.
#[derive(Clone)]
pub struct Handle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) local: PeerId,
    pub(crate) listening: Multiaddr,
    pub(crate) peers: watch::Receiver<Vec<PeerInfo>>,
}

impl Handle {
    /// This node's peer id (its node key).
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The address this node listens on, with its peer id.
    pub fn address(&self) -> Multiaddr {
        self.listening.clone()
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, GossipError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| GossipError::Stopped)?;
        answer.await.map_err(|_| GossipError::Stopped)
    }

    /// Gossips `data` on `topic`, and says whether any peer took it.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), GossipError> {
        self.ask(|reply| Command::Publish(topic, data, Some(reply)))
            .await?
    }

    /// Gossips `data` on `topic` without waiting (best effort: when the
    /// network task is this far behind, the message is dropped as gossip
    /// may drop any message).
    pub fn try_publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), GossipError> {
        self.commands
            .try_send(Command::Publish(topic, data, None))
            .map_err(|_| GossipError::Publish("the network task is not keeping up".into()))
    }

    /// Connects to a peer.
    pub async fn dial(&self, address: Multiaddr) -> Result<(), GossipError> {
        self.commands
            .send(Command::Dial(address))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// The connected peers, one entry each.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers.borrow().clone()
    }

    /// Sends `request` to `peer` and waits for its answer (bounded by the
    /// configured size and timeout).
    pub async fn request(&self, peer: PeerId, request: Vec<u8>) -> Result<Vec<u8>, GossipError> {
        self.ask(|reply| Command::Request(peer, request, reply))
            .await?
    }

    /// Stops the network: every connection closes and the network task
    /// ends (dropping what it holds, such as the request handler).
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }

    /// Disconnects `peer` and refuses it for the ban duration: it sent
    /// something provably false (e.g. a block whose certificate does not
    /// verify).
    pub async fn ban(&self, peer: PeerId, reason: String) -> Result<(), GossipError> {
        self.commands
            .send(Command::Ban(peer, reason))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// [`Handle::ban`] without waiting (dropped only if the network task is
    /// far behind; the peer's next offence bans it then).
    pub fn try_ban(&self, peer: PeerId, reason: String) {
        let _ = self.commands.try_send(Command::Ban(peer, reason));
    }
}
