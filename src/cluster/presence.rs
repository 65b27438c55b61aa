//! Which instances are alive: each SETs `wspipe-instance:NAME` to a JSON
//! description of itself with a TTL, and refreshes it every third of it.
//! An instance that dies (even by SIGKILL) drops out when its key
//! expires; one that shuts down deletes its key at once.
//!
//! The TTL is [`TTL`]; `WSPIPE_PRESENCE_TTL=SECS` (1 to 3600) changes it,
//! for tests that watch an instance drop out.

use std::time::Duration;

use super::rpc::Rpc;
use crate::shutdown::Shutdown;

/// How long an instance stays listed after its last heartbeat.
pub const TTL: Duration = Duration::from_secs(15);

/// Key prefix of the registrations.
pub const PREFIX: &str = "wspipe-instance:";

/// Most instances listed (a bound on what one SCAN gathers).
pub const MAX_INSTANCES: usize = 1000;

fn ttl() -> Duration {
    std::env::var("WSPIPE_PRESENCE_TTL")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map_or(TTL, Duration::from_secs)
}

/// Registers this instance until shutdown, then deletes its key.
pub(super) async fn heartbeat(rpc: Rpc, shutdown: Shutdown) {
    let ttl = ttl();
    let every = (ttl / 3).max(Duration::from_millis(300));
    let key = format!("{PREFIX}{}", rpc.name());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(answer) = rpc.answerer() else {
            continue;
        };
        let value = answer.presence();
        let set = async {
            let mut conn = rpc.connection().await?;
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async::<()>(&mut conn)
                .await
        };
        match tokio::time::timeout(super::TIMEOUT, set).await {
            Ok(Ok(())) => {}
            // The channel links log the outage; a heartbeat lost is only
            // an instance missing from `ctl instances` for a while.
            Ok(Err(e)) => {
                tracing::debug!("redis: heartbeat failed: {e}");
                rpc.reset().await;
            }
            Err(_) => rpc.reset().await,
        }
    }
    let del = async {
        let mut conn = rpc.connection().await?;
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut conn)
            .await
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), del).await;
}

/// The registrations of the live instances: (name, JSON), at most
/// [`MAX_INSTANCES`], within `within`.
pub async fn live(rpc: &Rpc, within: Duration) -> Result<Vec<(String, String)>, String> {
    let gather = async {
        let mut conn = rpc.connection().await.map_err(|e| e.to_string())?;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{PREFIX}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= MAX_INSTANCES {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys.truncate(MAX_INSTANCES);
        if keys.is_empty() {
            return Ok::<_, String>(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?.to_owned(), v?)))
            .collect())
    };
    match tokio::time::timeout(within, gather).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => {
            rpc.reset().await;
            Err(format!("redis: {e}"))
        }
        Err(_) => {
            rpc.reset().await;
            Err("redis: no answer in time".into())
        }
    }
}
