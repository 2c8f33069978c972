//! Helpers for end-to-end tests: start real `tally` processes on ports the
//! OS picks, find their RPC URL from their output, and stop them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tally_client::{BlockId, Client};
use tally_ledger::Hash;

/// The `tally` binary under test: the one cargo built, or `TALLY_TEST_BIN`
/// (to run a test against another build, e.g. a release or an older one).
pub fn tally_bin() -> PathBuf {
    match std::env::var_os("TALLY_TEST_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(env!("CARGO_BIN_EXE_tally")),
    }
}

/// Runs `tally ARGS` to completion; returns (success, stdout, stderr).
pub fn tally(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tally_bin())
        .args(args)
        .env_remove("TALLY_RPC")
        .env_remove("TALLY_HOME")
        .output()
        .expect("run tally");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Longest a node may take to print its RPC address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `tally` node process, killed on drop.
pub struct NodeProcess {
    child: Child,
    /// Its JSON-RPC URL.
    pub url: String,
    /// The address its peers dial (`/ip4/…/tcp/…/p2p/…`).
    pub p2p: String,
    /// Its home.
    pub home: PathBuf,
}

impl NodeProcess {
    /// Starts `tally ARGS` (which must print "RPC listening on URL").
    ///
    /// With `TALLY_TEST_LOG` set (a `TALLY_LOG` filter), the node logs at
    /// that level to `HOME.log` instead of the test's stderr.
    pub fn start(args: &[&str], home: &Path) -> NodeProcess {
        let (filter, stderr) = match std::env::var("TALLY_TEST_LOG") {
            Ok(filter) => {
                let log = std::fs::File::create(home.with_extension("log")).expect("log file");
                (filter, Stdio::from(log))
            }
            Err(_) => ("warn,libp2p_kad=error".to_owned(), Stdio::inherit()),
        };
        let mut child = Command::new(tally_bin())
            .args(args)
            .env("TALLY_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tally");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::sync_channel(2);
        std::thread::spawn(move || {
            // The node prints its RPC line, then its P2P line.
            let mut wanted = ["RPC listening on ", "P2P listening on "].into_iter();
            let mut next = wanted.next();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(value) = next.and_then(|prefix| line.strip_prefix(prefix)) {
                    let _ = tx.send(value.trim().to_owned());
                    next = wanted.next();
                }
            }
        });
        let (url, p2p) = match (
            rx.recv_timeout(STARTUP_TIMEOUT),
            rx.recv_timeout(STARTUP_TIMEOUT),
        ) {
            (Ok(url), Ok(p2p)) => (url, p2p),
            _ => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!("tally {args:?} did not start (exit: {status:?})");
            }
        };
        NodeProcess {
            child,
            url,
            p2p,
            home: home.to_path_buf(),
        }
    }

    /// `tally dev --home HOME --rpc-addr 127.0.0.1:0`.
    pub fn dev(home: &Path) -> NodeProcess {
        let home_arg = home.to_str().expect("utf-8 path");
        Self::start(
            &["dev", "--home", home_arg, "--rpc-addr", "127.0.0.1:0"],
            home,
        )
    }

    /// `tally run --home HOME` on free RPC and peer-to-peer ports.
    pub fn run(home: &Path) -> NodeProcess {
        let home_arg = home.to_str().expect("utf-8 path");
        Self::start(
            &[
                "run",
                "--home",
                home_arg,
                "--rpc-addr",
                "127.0.0.1:0",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
            ],
            home,
        )
    }

    /// `tally run --home HOME` on the ports its config names.
    pub fn run_configured(home: &Path) -> NodeProcess {
        let home_arg = home.to_str().expect("utf-8 path");
        Self::start(&["run", "--home", home_arg], home)
    }

    /// An SDK client for this node.
    pub fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited 0.
    pub fn terminate(mut self) -> bool {
        // The standard library only sends SIGKILL; `kill` sends SIGTERM.
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs a raw body to the node; returns (HTTP status, body text).
pub async fn post_raw(
    url: &str,
    body: impl Into<reqwest::Body>,
    content_type: &str,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("http request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// POSTs a JSON-RPC request value; returns the parsed response.
pub async fn call_raw(url: &str, request: serde_json::Value) -> serde_json::Value {
    let (_, body) = post_raw(url, request.to_string(), "application/json").await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("response is not JSON ({e}): {body}"))
}

/// Edits a home's config.toml: `edit` gets the parsed table.
pub fn edit_config(home: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let path = home.join("config.toml");
    let mut table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    edit(&mut table);
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
}

/// Sets integer settings of one section of a home's config.toml.
pub fn set_config(home: &Path, section: &str, settings: &[(&str, i64)]) {
    edit_config(home, |config| {
        let table = config
            .entry(section)
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        for (key, value) in settings {
            table.insert((*key).into(), toml::Value::Integer(*value));
        }
    });
}

/// Initialises a dev-chain home (single validator, funded devnet accounts)
/// without starting it.
pub fn init_dev_home(home: &Path) {
    init_dev_home_with_key(home, "validator-0");
}

/// Like [`init_dev_home`], with the devnet key `key` as the node's key (a
/// key other than `validator-0` makes a node that does not produce blocks).
pub fn init_dev_home_with_key(home: &Path, key: &str) {
    let genesis = home.with_extension("genesis.json");
    let (ok, _, err) = tally(&[
        "genesis",
        "new",
        "--devnet",
        "1",
        "--chain-id",
        "tally-dev",
        "--out",
        genesis.to_str().unwrap(),
    ]);
    assert!(ok, "genesis new failed: {err}");
    let (ok, _, err) = tally(&[
        "init",
        "--home",
        home.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--devnet-key",
        key,
    ]);
    assert!(ok, "init failed: {err}");
}

/// `tally devnet init` of four validators and one full node under `root`,
/// on free ports: the nodes it lists (`name`, `home`, `rpc_url`, ...).
pub fn devnet_init(root: &Path) -> Vec<serde_json::Value> {
    let base = tally_cli::devnet::free_base_port(5).expect("a free port range");
    let (ok, out, err) = tally(&[
        "devnet",
        "init",
        "--validators",
        "4",
        "--full-nodes",
        "1",
        "--dir",
        root.to_str().expect("utf-8 path"),
        "--base-port",
        &base.to_string(),
        "--json",
    ]);
    assert!(ok, "devnet init failed: {err}");
    serde_json::from_str(&out).expect("devnet init --json lists the nodes")
}

/// Longest a node may take to reach a height it is told about.
pub const STEP_DEADLINE: Duration = Duration::from_secs(90);

/// Waits until the node's committed height reaches `height`.
pub async fn wait_height(client: &Client, height: u64) {
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    loop {
        if let Ok(status) = client.status().await {
            if status.height >= height {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not reach height {height} within {STEP_DEADLINE:?}",
            client.url()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gossip filter for in-process test peers: they take nothing in.
pub struct DeafFilter;

impl tally_gossip::MessageFilter for DeafFilter {
    type Message = ();
    fn check(&self, _: tally_gossip::Topic, _: &[u8]) -> tally_gossip::Verdict<()> {
        tally_gossip::Verdict::Ignore
    }
}

/// A request handler for in-process test peers: they answer nothing.
pub struct Mute;

impl tally_gossip::RequestHandler for Mute {
    fn answer(&self, _: tally_gossip::NodeId, _: Vec<u8>) -> Option<Vec<u8>> {
        None
    }
}

/// The nodes of a `tally devnet init` layout by name, and those running.
pub struct Devnet {
    pub homes: std::collections::HashMap<String, PathBuf>,
    pub urls: std::collections::HashMap<String, String>,
    pub running: std::collections::HashMap<String, NodeProcess>,
}

impl Devnet {
    /// The layout `devnet_init` made under `root`, nothing running.
    pub fn laid_out(root: &Path) -> Devnet {
        let mut net = Devnet {
            homes: Default::default(),
            urls: Default::default(),
            running: Default::default(),
        };
        for node in devnet_init(root) {
            let name = node["name"].as_str().expect("a name").to_owned();
            let home = PathBuf::from(node["home"].as_str().expect("a home"));
            let url = node["rpc_url"].as_str().expect("an RPC URL").to_owned();
            net.homes.insert(name.clone(), home);
            net.urls.insert(name, url);
        }
        net
    }

    pub fn start(&mut self, name: &str) {
        let node = NodeProcess::run_configured(&self.homes[name]);
        assert_eq!(
            node.url, self.urls[name],
            "{name} serves where devnet init said"
        );
        self.running.insert(name.to_owned(), node);
    }

    pub fn kill9(&mut self, name: &str) {
        self.running.remove(name).unwrap().kill9();
    }

    pub fn client(&self, name: &str) -> Client {
        Client::new(&self.urls[name]).unwrap()
    }

    pub async fn height(&self, name: &str) -> u64 {
        self.client(name).status().await.unwrap().height
    }

    /// Waits until `name`'s committed height reaches `height`.
    pub async fn wait_height(&self, name: &str, height: u64) {
        let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
        loop {
            if let Ok(status) = self.client(name).status().await {
                if status.height >= height {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not reach height {height} within {STEP_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The block hash at every height 1..=to, as `name` reports it.
    pub async fn hashes(&self, name: &str, to: u64) -> Vec<Hash> {
        let client = self.client(name);
        let mut hashes = Vec::new();
        for height in 1..=to {
            hashes.push(
                client
                    .block(BlockId::Height(height), false)
                    .await
                    .unwrap()
                    .hash,
            );
        }
        hashes
    }
}

/// Saves `answer` as `dir/NAME.json` for `tally verify`; returns its path.
pub fn save_answer(dir: &Path, name: &str, answer: impl serde::Serialize) -> String {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&answer).expect("JSON")).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}
