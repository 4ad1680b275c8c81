//! Claiming a device with its claim code (a writer operation).

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::to_i64;
use crate::auth;
use crate::store::{StoreError, TenantId};

/// Moves the device with `claim_code` into `tenant_id`. The outer error
/// is a database failure; the inner one the claim's answer (unknown or
/// expired code), which commits nothing.
pub(super) fn claim(
    tx: &Connection,
    tenant_id: TenantId,
    claim_code: &str,
    now_ms: u64,
) -> Result<Result<String, StoreError>, StoreError> {
    let device_id = match claimable(tx, claim_code, now_ms)? {
        Ok(device_id) => device_id,
        Err(answer) => return Ok(Err(answer)),
    };
    move_device(tx, &device_id, tenant_id)?;
    Ok(Ok(device_id))
}

/// The device a claim code would claim now, changing nothing: the inner
/// error is [`StoreError::NotFound`] (no such unused code) or
/// [`StoreError::Expired`].
pub(super) fn claimable(
    tx: &Connection,
    claim_code: &str,
    now_ms: u64,
) -> Result<Result<String, StoreError>, StoreError> {
    let Some(code) = auth::normalize_claim_code(claim_code) else {
        return Ok(Err(StoreError::NotFound));
    };
    let hash = auth::hash_secret(&code);
    let device: Option<(String, Option<i64>)> = tx
        .query_row(
            "SELECT id, claim_expires_ms FROM devices WHERE claim_hash = ?1 AND revoked = 0",
            params![hash.as_slice()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((device_id, expires_ms)) = device else {
        return Ok(Err(StoreError::NotFound));
    };
    if expires_ms.is_some_and(|expires_ms| to_i64(now_ms) >= expires_ms) {
        return Ok(Err(StoreError::Expired));
    }
    Ok(Ok(device_id))
}

/// Moves a device into `tenant_id` and uses its claim code up.
pub(super) fn move_device(
    tx: &Connection,
    device_id: &str,
    tenant_id: TenantId,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE devices SET tenant_id = ?2, claim_hash = NULL WHERE id = ?1",
        params![device_id, tenant_id],
    )?;
    // Its open connection belongs to the old tenant: close it (but not a
    // connection made after the claim, see `Revocation::Moved`).
    tx.execute(
        "INSERT INTO revocations(kind, subject) VALUES ('moved', ?1)",
        params![device_id],
    )?;
    Ok(())
}
