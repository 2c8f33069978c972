//! The network task: owns the swarm, has the application's message filter
//! judge every gossip message (on the judges' threads, [`crate::judge`])
//! before it is delivered or forwarded, hands
//! peers' requests to the application's handler off the task, keeps the
//! connected-peer list, and bans.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, kad, Multiaddr, PeerId, Swarm};
use tally_ledger::Hash;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::behaviour::{
    identify_version, topic_of, Behaviour, BehaviourEvent, MAX_SERVING, NETWORK_VERSION,
};
use crate::handle::{Command, Reply};
use crate::judge::{Case, Judged, Judges};
use crate::rate::PeerBuckets;
use crate::{peer_id_of, Config, GossipError, Inbound, PeerInfo, RequestHandler, Topic, Verdict};

/// Requests of one peer being answered at once: a node may ask for blocks,
/// compare tips and exchange catch-up messages at the same time.
const MAX_SERVING_PER_PEER: usize = 4;

/// Most peers whose invalid messages are counted at once.
const MAX_TRACKED_OFFENDERS: usize = 10_000;

/// An answer computed off the task, on its way back.
pub(crate) type Served = (InboundRequestId, ResponseChannel<Vec<u8>>, Option<Vec<u8>>);

pub(crate) struct Task<M: Send + 'static> {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) config: Config,
    pub(crate) genesis_hash: Hash,
    pub(crate) topics: HashMap<gossipsub::TopicHash, Topic>,
    pub(crate) judges: Judges,
    pub(crate) handler: Arc<dyn RequestHandler>,
    pub(crate) inbound: mpsc::Sender<Inbound<M>>,
    pub(crate) served: mpsc::Sender<Served>,
    /// Requests being answered, until their answer is written.
    pub(crate) serving: HashMap<InboundRequestId, PeerId>,
    pub(crate) persistent: Vec<(PeerId, Multiaddr)>,
    pub(crate) strikes: HashMap<PeerId, u32>,
    pub(crate) banned: HashMap<PeerId, Instant>,
    pub(crate) buckets: HashMap<PeerId, PeerBuckets>,
    pub(crate) requests: HashMap<OutboundRequestId, Reply<Vec<u8>>>,
    pub(crate) connections: HashMap<ConnectionId, PeerInfo>,
    pub(crate) peers: watch::Sender<Vec<PeerInfo>>,
}

impl<M: Send + 'static> Task<M> {
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut served: mpsc::Receiver<Served>,
        mut judged: mpsc::Receiver<Judged<M>>,
    ) {
        let mut redial = tokio::time::interval(self.config.redial_interval);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop) | None => break, // stopped, or every handle is gone
                    Some(command) => self.on_command(command),
                },
                Some((case, verdict)) = judged.recv() => self.on_judged(case, verdict),
                Some((id, channel, response)) = served.recv() => match response {
                    Some(response) => {
                        // Fails only if the peer went away meanwhile.
                        if self.swarm.behaviour_mut().requests.send_response(channel, response).is_err() {
                            self.serving.remove(&id);
                        }
                    }
                    // Dropping the channel fails the peer's request (and
                    // reports an InboundFailure that frees the slot).
                    None => drop(channel),
                },
                _ = redial.tick() => self.redial(),
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        // Judges blocked on a full channel must see it closed before the
        // pool (in `self`) waits for them.
        drop(judged);
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned
            .get(peer)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Dials persistent peers that are not connected, and asks discovery
    /// for more peers while there are few.
    pub(crate) fn redial(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.banned.remove(&peer);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .remove_blacklisted_peer(&peer);
        }
        for (id, address) in self.persistent.clone() {
            if self.swarm.is_connected(&id) || self.is_banned(&id) {
                continue;
            }
            let opts = DialOpts::peer_id(id)
                .addresses(vec![address])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(peer = %id, error = %e, "cannot dial persistent peer");
            }
        }
        let connected = self.swarm.connected_peers().count();
        if connected > 0 && connected < self.config.max_peers as usize / 2 {
            self.swarm
                .behaviour_mut()
                .kademlia
                .get_closest_peers(PeerId::random());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish(topic, data, reply) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic_of(&self.genesis_hash, topic), data)
                    .map(|_| ())
                    .map_err(|e| GossipError::Publish(e.to_string()));
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            debug!(error = %e, "message not published");
                        }
                    }
                }
            }
            Command::Dial(address) => {
                if let Err(e) = self.swarm.dial(address.clone()) {
                    warn!(%address, error = %e, "cannot dial peer");
                }
            }
            Command::Request(peer, request, reply) => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(GossipError::Request(format!(
                        "peer {peer} is not connected"
                    ))));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .requests
                    .send_request(&peer, request);
                self.requests.insert(id, reply);
            }
            Command::Ban(peer, reason) => self.ban(peer, &reason),
            Command::Stop => {}
        }
    }

    /// The connected peers, one entry each, for [`crate::Handle::peers`].
    fn publish_peers(&mut self) {
        let persistent: Vec<PeerId> = self.persistent.iter().map(|(id, _)| *id).collect();
        let mut infos: Vec<PeerInfo> = self.connections.values().cloned().collect();
        for info in &mut infos {
            info.persistent = persistent.contains(&info.id);
            if peer_id_of(&info.address).is_none() {
                info.address = info.address.clone().with(Protocol::P2p(info.id));
            }
        }
        infos.sort_by_key(|i| i.id.to_string());
        infos.dedup_by_key(|i| i.id);
        self.peers.send_replace(infos);
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_message(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Requests(event)) => self.on_request_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kademlia(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) => {
                let connected = self.swarm.connected_peers().count();
                if !self.swarm.is_connected(&peer)
                    && !self.is_banned(&peer)
                    && connected < self.config.max_peers as usize
                {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addresses.into_vec())
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        debug!(%peer, error = %e, "cannot dial discovered peer");
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if self.is_banned(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let (address, outbound) = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => (address, true),
                    ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr, false),
                };
                debug!(peer = %peer_id, %address, outbound, "peer connected");
                self.connections.insert(
                    connection_id,
                    PeerInfo {
                        id: peer_id,
                        address,
                        outbound,
                        persistent: false,
                    },
                );
                self.publish_peers();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.buckets.remove(&peer_id);
                }
                self.publish_peers();
            }
            other => debug!(?other, "network event"),
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        let overrides = self.config.validator_overrides;
        let ours = identify_version(&self.genesis_hash, overrides.as_ref());
        if info.protocol_version != ours {
            let reason = refusal(
                &info.protocol_version,
                &self.genesis_hash,
                overrides.as_ref(),
            );
            // A node of this chain with another release or other overrides
            // is misconfigured, not hostile: refused for a short while, so
            // that once its operator fixes it, it is taken at once.
            let same_chain = info
                .protocol_version
                .contains(&format!("/{}", self.genesis_hash.to_hex()));
            let duration = match same_chain {
                true => REFUSAL_COOLDOWN.min(self.config.ban_duration),
                false => self.config.ban_duration,
            };
            self.ban_for(peer, &reason, duration);
            return;
        }
        // What the peer says it listens on feeds discovery.
        for address in info.listen_addrs {
            self.swarm
                .behaviour_mut()
                .kademlia
                .add_address(&peer, address);
        }
    }

    fn on_request_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => self.serve(peer, request_id, request, channel),
            request_response::Event::ResponseSent { request_id, .. }
            | request_response::Event::InboundFailure { request_id, .. } => {
                self.serving.remove(&request_id);
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let error = match error {
                        request_response::OutboundFailure::Io(e)
                            if e.kind() == std::io::ErrorKind::InvalidData =>
                        {
                            GossipError::BadResponse(format!("{peer}: {e}"))
                        }
                        other => GossipError::Request(format!("{peer}: {other}")),
                    };
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    /// Hands a peer's request to the handler, off the task, within the
    /// limits: a few per peer at a time, a bounded number in all, each
    /// holding its slot until its answer is written (answers waiting for
    /// slow readers are what costs memory), and a rate per peer.
    fn serve(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let rate = self.config.max_requests_per_sec;
        let allowed = self
            .buckets
            .entry(peer)
            .or_default()
            .request(rate, Instant::now());
        let busy = self.serving.values().filter(|p| **p == peer).count() >= MAX_SERVING_PER_PEER;
        if !allowed || busy || self.serving.len() >= MAX_SERVING {
            debug!(%peer, "dropping a request over the limits");
            return; // dropping the channel tells the peer
        }
        self.serving.insert(id, peer);
        let handler = self.handler.clone();
        let served = self.served.clone();
        tokio::task::spawn_blocking(move || {
            let answer = handler.answer(peer, request);
            let _ = served.blocking_send((id, channel, answer));
        });
    }

    /// Hands a gossip message to the judges, within the peer's rate; what
    /// exceeds the rate, or finds the judges' queue full, is dropped
    /// without blame.
    fn on_message(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let rate = self.config.max_messages_per_sec;
        let within_rate = self
            .buckets
            .entry(source)
            .or_default()
            .message(rate, Instant::now());
        let Some(topic) = self.topics.get(&message.topic).copied() else {
            self.report(&id, &source, MessageAcceptance::Reject);
            return self.strike(source);
        };
        if !within_rate {
            return self.report(&id, &source, MessageAcceptance::Ignore);
        }
        let case = Case {
            id,
            source,
            topic,
            data: message.data,
        };
        if let Some(case) = self.judges.submit(case) {
            debug!(?topic, "the gossip judges are busy; dropping a message");
            self.report(&case.id, &case.source, MessageAcceptance::Ignore);
        }
    }

    /// Reports a judged message to gossipsub (which forwards it only if it
    /// was accepted) and delivers what was accepted.
    fn on_judged(&mut self, case: Case, verdict: Verdict<M>) {
        let acceptance = match &verdict {
            Verdict::Accept(_) => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        self.report(&case.id, &case.source, acceptance);
        match verdict {
            Verdict::Accept(checked) => {
                let inbound = Inbound {
                    topic: case.topic,
                    message: checked,
                    from: case.source,
                };
                if self.inbound.try_send(inbound).is_err() {
                    warn!("the node is not keeping up with the network; dropping a message");
                }
            }
            Verdict::Reject => self.strike(case.source),
            Verdict::Ignore => {}
        }
    }

    fn report(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    /// Counts an invalid message against `peer`; bans repeat offenders.
    fn strike(&mut self, peer: PeerId) {
        if self.strikes.len() >= MAX_TRACKED_OFFENDERS && !self.strikes.contains_key(&peer) {
            // Identities are free: forget old counts rather than grow.
            self.strikes.clear();
        }
        let strikes = self.strikes.entry(peer).or_insert(0);
        *strikes += 1;
        if *strikes >= self.config.max_invalid_messages {
            self.ban(peer, "it keeps sending invalid messages");
        }
    }

    fn ban(&mut self, peer: PeerId, reason: &str) {
        self.ban_for(peer, reason, self.config.ban_duration);
    }

    fn ban_for(&mut self, peer: PeerId, reason: &str, duration: Duration) {
        warn!(%peer, reason, ban_secs = duration.as_secs(), "banning a peer");
        self.strikes.remove(&peer);
        self.banned.insert(peer, Instant::now() + duration);
        self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
        self.swarm.behaviour_mut().kademlia.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }
}

/// How long a node of this chain that runs another network version or
/// other validator overrides is refused before it may try again.
const REFUSAL_COOLDOWN: Duration = Duration::from_secs(10);

/// Why a peer that identified itself as `theirs` is refused, and what to do.
fn refusal(theirs: &str, genesis_hash: &Hash, overrides: Option<&Hash>) -> String {
    let ours = identify_version(genesis_hash, overrides);
    let same_chain = format!("/{}", genesis_hash.to_hex());
    let Some((version, rest)) = theirs
        .strip_prefix("/tally/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(v, rest)| Some((v.parse::<u32>().ok()?, rest)))
    else {
        return format!("it is not a tally node of this chain ({theirs}; this node: {ours})");
    };
    let rest = format!("/{rest}");
    let Some(their_overrides) = rest.strip_prefix(same_chain.as_str()) else {
        return format!(
            "it is on another chain ({theirs}; this node: {ours}): check that both use the same \
             genesis.json"
        );
    };
    if version < NETWORK_VERSION {
        return format!(
            "it runs network protocol version {version} (this node: {NETWORK_VERSION}): upgrade \
             that node to this tally release"
        );
    }
    if version > NETWORK_VERSION {
        return format!(
            "it runs network protocol version {version} (this node: {NETWORK_VERSION}): upgrade \
             this node to the peer's tally release"
        );
    }
    let theirs_named = their_overrides
        .strip_prefix("/override/")
        .map_or("none".to_owned(), str::to_owned);
    let ours_named = overrides.map_or("none".to_owned(), Hash::to_hex);
    format!(
        "it has other validator-set overrides (its overrides id: {theirs_named}; this node's: \
         {ours_named}): every node of the chain needs the same [[validator_override]] entries in \
         config.toml (`tally doctor` compares nodes; OPERATIONS.md, \"When the chain halts\")"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_peer_is_told_what_to_do() {
        let genesis = Hash::digest(b"genesis");
        let older = format!("/tally/4/{}", genesis.to_hex());
        assert!(
            refusal(&older, &genesis, None).contains("version 4 (this node: 5): upgrade that node")
        );
        let newer = format!("/tally/6/{}", genesis.to_hex());
        assert!(refusal(&newer, &genesis, None).contains("upgrade this node"));
        let other = format!("/tally/5/{}", Hash::digest(b"other").to_hex());
        assert!(refusal(&other, &genesis, None).contains("another chain"));
        assert!(refusal("/ipfs/0.1.0", &genesis, None).contains("not a tally node"));
        let id = Hash::digest(b"override");
        let overridden = identify_version(&genesis, Some(&id));
        let told = refusal(&overridden, &genesis, None);
        assert!(
            told.contains(&format!(
                "its overrides id: {}; this node's: none",
                id.to_hex()
            )),
            "{told}"
        );
        let plain = identify_version(&genesis, None);
        let told = refusal(&plain, &genesis, Some(&id));
        assert!(
            told.contains(&format!(
                "its overrides id: none; this node's: {}",
                id.to_hex()
            )),
            "{told}"
        );
        let other_override = identify_version(&genesis, Some(&Hash::digest(b"other")));
        assert!(refusal(&other_override, &genesis, Some(&id)).contains("[[validator_override]]"));
    }
}
