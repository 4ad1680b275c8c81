//! The device SDK (tether-core's client, as on the firmware, through
//! tether-host's tokio board) against the real server over loopback, with
//! the real SQLite store: permanent refusals stop the client, and a flash
//! outbox cut by thousands of simulated power failures loses and
//! duplicates nothing in the server's database.

mod common;

use core::cell::RefCell;
use core::ops::Range;
use core::time::Duration;

use common::{BoxError, TestResult, TestServer};
use embedded_storage::nor_flash::{self as blocking, ErrorType};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash, ReadNorFlash};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tether_core::board::Parts;
use tether_core::client::{self, ClientConfig, NeedsProvisioning, NoCommands, Resources};
use tether_core::flash::{FlashFault, FlashOutbox, RamFlash};
use tether_core::outbox::Outbox;
use tether_core::session::{ConnectionState, LinkError, PublishError};
use tether_host::board::TokioBoard;
use tether_host::clock::TokioClock;
use tether_host::connector::TokioConnector;

/// Waits until `condition` holds, for at most `limit`.
async fn until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    condition()
}

#[tokio::test]
async fn a_wrong_token_stops_the_client_instead_of_retrying() -> TestResult {
    let t = TestServer::start().await?;
    t.add_device("default", "wrong-token")?;
    let url = t.url("/v1/device");
    let config = ClientConfig::new(&url, "wrong-token", "1.0.0").with_authorization(
        "Bearer td_0000000000000000000000000000000000000000000000000000000000000000",
    );
    let mut resources: Resources<TokioBoard> = Resources::new();
    let (client, mut runner) = client::new(TokioBoard::new(), config, &mut resources)?;
    let stopped = tokio::time::timeout(common::WAIT, runner.run(NoCommands)).await?;
    let reason = LinkError::Refused { status: 401 };
    assert_eq!(stopped, NeedsProvisioning(reason));
    assert_eq!(client.state(), ConnectionState::NeedsProvisioning(reason));
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_revoked_device_stops_the_client_with_needs_provisioning() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "revoked-1")?;
    let url = t.url("/v1/device");
    let authorization = format!("Bearer {token}");
    let config = ClientConfig::new(&url, "revoked-1", "1.0.0").with_authorization(&authorization);
    let mut resources: Resources<TokioBoard> = Resources::new();
    let (client, mut runner) = client::new(TokioBoard::new(), config, &mut resources)?;
    let admin = t.admin()?;
    let scenario = async {
        client.publish("sdk/readings", &1).await?;
        assert!(until(common::WAIT, || client.stats().outbox_len == 0).await);
        admin.revoke_device("revoked-1")?;
        core::future::pending::<Result<(), BoxError>>().await
    };
    let stopped = tokio::time::timeout(common::WAIT, async {
        tokio::select! {
            stopped = runner.run(NoCommands) => Ok(stopped),
            result = scenario => result.map(|()| unreachable!()),
        }
    })
    .await??;
    let reason = LinkError::Closed { code: 4005 };
    assert_eq!(stopped, NeedsProvisioning(reason));
    assert_eq!(client.state(), ConnectionState::NeedsProvisioning(reason));
    t.server.shutdown().await;
    Ok(())
}

/// 12 KiB of simulated NOR flash per device; the outbox uses the last
/// three sectors.
type Flash = RamFlash<{ 4 * 4096 }>;
const OUTBOX: Range<u32> = 4096..4 * 4096;

/// The device's flash, shared so the test can see the power fail while the
/// outbox owns it.
struct SharedFlash<'a>(&'a RefCell<Flash>);

impl ErrorType for SharedFlash<'_> {
    type Error = FlashFault;
}

impl ReadNorFlash for SharedFlash<'_> {
    const READ_SIZE: usize = 4;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashFault> {
        blocking::ReadNorFlash::read(&mut *self.0.borrow_mut(), offset, bytes)
    }

    fn capacity(&self) -> usize {
        blocking::ReadNorFlash::capacity(&*self.0.borrow())
    }
}

impl NorFlash for SharedFlash<'_> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashFault> {
        blocking::NorFlash::erase(&mut *self.0.borrow_mut(), from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashFault> {
        blocking::NorFlash::write(&mut *self.0.borrow_mut(), offset, bytes)
    }
}

impl MultiwriteNorFlash for SharedFlash<'_> {}

type FlashBoard<'a> = Parts<TokioConnector, TokioClock, StdRng, FlashOutbox<SharedFlash<'a>, 256>>;

#[derive(serde::Serialize)]
struct Reading {
    counter: u32,
}

/// Who a simulated device is.
struct Identity<'a> {
    url: &'a str,
    id: &'a str,
    authorization: &'a str,
}

/// What one simulated device did across its boots.
#[derive(Default)]
struct History {
    /// The last reading's counter.
    counter: u32,
    /// Counters whose `publish` returned `Ok`: stored in flash.
    published: Vec<u32>,
    boots: u32,
    cuts: u32,
    full: u32,
}

/// One boot: mount the flash outbox, run the client, publish a few
/// readings and let them go out, until the power fails (if `cut` says when)
/// or everything is acknowledged.
async fn boot(
    flash: &RefCell<Flash>,
    who: &Identity<'_>,
    cut: Option<usize>,
    rng: &mut StdRng,
    history: &mut History,
) -> Result<(), BoxError> {
    history.boots += 1;
    {
        let mut flash = flash.borrow_mut();
        flash.power_on();
        if let Some(bytes) = cut {
            flash.cut_power_after(bytes);
        }
    }
    let Ok(outbox) = FlashOutbox::mount(SharedFlash(flash), OUTBOX).await else {
        history.cuts += 1;
        return Ok(());
    };
    let board: FlashBoard<'_> = Parts {
        connector: TokioConnector::new(),
        clock: TokioClock::new(),
        rng: StdRng::from_os_rng(),
        outbox,
    };
    let config = ClientConfig::new(who.url, who.id, "1.0.0").with_authorization(who.authorization);
    let mut resources: Resources<FlashBoard<'_>> = Resources::new();
    let (client, mut runner) = client::new(board, config, &mut resources)?;
    let powered = || flash.borrow().is_powered();
    let readings = rng.next_u32() % 8;
    let device = async {
        for _ in 0..readings {
            history.counter += 1;
            let counter = history.counter;
            match client.publish("sdk/cuts", &Reading { counter }).await {
                Ok(_) => history.published.push(counter),
                Err(PublishError::Full) => history.full += 1,
                Err(PublishError::Storage(_)) => break,
                Err(e) => return Err(BoxError::from(format!("publish: {e}"))),
            }
            if !powered() {
                break;
            }
            if rng.next_u32().is_multiple_of(3) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Let acknowledgements come back and the outbox free its entries
        // (flash writes the power can cut too).
        let limit = if cut.is_some() {
            Duration::from_millis(200)
        } else {
            common::WAIT
        };
        until(limit, || !powered() || client.stats().outbox_len == 0).await;
        Ok(())
    };
    let result = tokio::select! {
        stopped = runner.run(NoCommands) => Err(BoxError::from(format!("runner stopped: {stopped:?}"))),
        result = device => result,
    };
    if !powered() {
        history.cuts += 1;
    }
    result
}

/// Counters of the readings the server's database holds for `device`.
fn stored(t: &TestServer, device: &str) -> Result<Vec<u32>, BoxError> {
    let db = rusqlite::Connection::open(t.server.database_path())?;
    let mut statement = db.prepare("SELECT payload FROM messages WHERE device_id = ?1")?;
    let rows = statement.query_map([device], |row| row.get::<_, String>(0))?;
    let mut counters = Vec::new();
    for payload in rows {
        let value: serde_json::Value = serde_json::from_str(&payload?)?;
        let counter = value["counter"].as_u64().ok_or("no counter")?;
        counters.push(u32::try_from(counter)?);
    }
    Ok(counters)
}

/// Simulated power failures at any byte of any flash write or erase of the
/// outbox (publishing, freeing acknowledged entries, erasing a sector),
/// `TETHER_POWER_CUTS` of them (default 2000) spread over 20 devices
/// running at once against the real server. After the last boot every
/// reading whose `publish` returned `Ok` is in the server's SQLite database
/// exactly once, and no reading is there twice (an acknowledged reading
/// resent as a new one would be).
#[tokio::test(flavor = "current_thread")]
async fn power_cuts_in_the_flash_outbox_lose_and_duplicate_nothing_in_the_database() -> TestResult {
    const DEVICES: u32 = 20;
    let cuts: u32 = std::env::var("TETHER_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let t = TestServer::start().await?;
    let url = t.url("/v1/device");
    let mut devices = Vec::new();
    for n in 0..DEVICES {
        let id = format!("cut-{n:02}");
        let token = t.add_device("default", &id)?;
        devices.push((id, format!("Bearer {token}")));
    }
    let per_device = cuts.div_ceil(DEVICES);
    let runs = devices.iter().enumerate().map(|(n, (id, authorization))| {
        let url = &url;
        async move {
            let flash = RefCell::new(Flash::new());
            let mut rng = StdRng::seed_from_u64(0x5eed + n as u64);
            let mut history = History::default();
            let who = Identity {
                url,
                id,
                authorization,
            };
            while history.cuts < per_device {
                // Half the cuts a few writes into the boot, half anywhere
                // up to past a whole sector erase.
                let limit = if rng.next_u32() % 2 == 0 { 300 } else { 4_500 };
                let cut = usize::try_from(rng.next_u32() % limit)?;
                boot(&flash, &who, Some(cut), &mut rng, &mut history).await?;
            }
            // The power stays on: everything left goes out.
            boot(&flash, &who, None, &mut rng, &mut history).await?;
            let outbox = FlashOutbox::<_, 256>::mount(SharedFlash(&flash), OUTBOX).await;
            let left = outbox.map(|o| o.len()).map_err(|e| format!("{e}"))?;
            Ok::<_, BoxError>((id.clone(), history, left))
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let (mut boots, mut published, mut full) = (0, 0, 0);
    for result in results {
        let (id, history, left) = result?;
        assert_eq!(left, 0, "{id}: the outbox still holds {left} readings");
        let mut stored = stored(&t, &id)?;
        stored.sort_unstable();
        let count = stored.len();
        stored.dedup();
        assert_eq!(
            count,
            stored.len(),
            "{id}: a reading is in the database twice"
        );
        let lost: Vec<u32> = history
            .published
            .iter()
            .filter(|c| stored.binary_search(c).is_err())
            .copied()
            .collect();
        assert!(lost.is_empty(), "{id}: lost {lost:?}");
        boots += history.boots;
        published += history.published.len();
        full += history.full;
    }
    assert!(
        published > cuts as usize,
        "only {published} readings published"
    );
    println!(
        "{boots} boots of {DEVICES} devices, {cuts} power cuts, {published} readings published ({full} refused: outbox full), all stored once"
    );
    t.server.shutdown().await;
    Ok(())
}
