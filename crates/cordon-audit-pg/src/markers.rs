//! Close and open markers of a PostgreSQL chain: the directory store's signed notes
//! (`cordon_audit::marker`), signed with the chain's checkpoint key, kept in the `markers` table
//! and published beside the chain's checkpoints (`<publish>/<chain id>/markers/`).
//!
//! Why: the writer role may `INSERT`, and a row's chain link is only a hash, so whoever holds
//! that role can append well-linked rows while the gateway is stopped; without markers its next
//! start would adopt and sign them as a crash's tail. A clean stop therefore ends with a signed
//! close marker (size and root); a start that finds a close marker as the newest marker refuses
//! rows beyond it as forged, and otherwise writes an open marker before its first append. A crash
//! leaves no close marker: its uncovered tail is adopted, as for a directory store. The table
//! copy stops the writer role (it cannot delete rows); the published copy stops the database's
//! owner, who can.

use std::path::{Path, PathBuf};

use cordon_audit::marker::{self, Found, Marker, MarkerError, MarkerKind};
use cordon_audit::merkle::Hash;
use cordon_audit::note::{NoteSigner, NoteVerifier};

use crate::error::PgError;

/// SQL text, built once per store.
pub(crate) struct MarkerSql {
    read: String,
    insert: String,
    free_seq: String,
}

impl MarkerSql {
    pub(crate) fn new(schema: &str) -> MarkerSql {
        MarkerSql {
            read: format!("SELECT seq, note FROM \"{schema}\".markers WHERE chain_id = $1 ORDER BY seq"),
            insert: format!("INSERT INTO \"{schema}\".markers (chain_id, seq, note) VALUES ($1, $2, $3)"),
            // The first sequence number from $2 on that no row of the chain holds (rows that are
            // not the chain's may hold any number: the marker goes to the next gap, never onto
            // or past a number somebody chose to block).
            free_seq: format!(
                "SELECT min(c) FROM (SELECT $2::bigint AS c UNION ALL \
                 SELECT seq + 1 FROM \"{schema}\".markers WHERE chain_id = $1 AND seq >= $2 AND seq < 9223372036854775807) cands \
                 WHERE NOT EXISTS (SELECT 1 FROM \"{schema}\".markers m WHERE m.chain_id = $1 AND m.seq = cands.c)"
            ),
        }
    }
}

/// A chain's rows in the `markers` table.
pub(crate) struct TableMarkers {
    /// The rows that verify with the chain's key (and are numbered as their row).
    pub valid: Vec<Found>,
    /// Why each other row was not taken: anyone with the writer role can insert a row, so one
    /// that does not verify is no claim (and never stops the chain), only something to report.
    pub junk: Vec<String>,
}

/// The chain's rows in the table; `Ok(None)` when the schema predates markers (no table).
pub(crate) async fn read_table(
    client: &tokio_postgres::Client,
    read_sql: &str,
    chain_id: &str,
    verifier: &NoteVerifier,
) -> Result<Option<TableMarkers>, tokio_postgres::Error> {
    let rows = match client.query(read_sql, &[&chain_id]).await {
        Ok(rows) => rows,
        Err(e) if e.code().map(|c| c.code()) == Some("42P01") => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut notes = Vec::with_capacity(rows.len());
    for row in rows {
        notes.push((row.try_get(0)?, row.try_get(1)?));
    }
    Ok(Some(from_rows(chain_id, notes, verifier)))
}

/// Table rows `(seq, note)` of a chain, sorted into [`TableMarkers`].
pub(crate) fn from_rows(chain_id: &str, rows: Vec<(i64, String)>, verifier: &NoteVerifier) -> TableMarkers {
    let mut out = TableMarkers {
        valid: Vec::with_capacity(rows.len()),
        junk: Vec::new(),
    };
    for (seq, note) in rows {
        match marker::open(note.as_bytes(), verifier) {
            Ok(m) if i64::try_from(m.seq).ok() == Some(seq) => out.valid.push(Found {
                path: PathBuf::from(format!("markers table, chain {chain_id}, {}", m.file_name())),
                marker: m,
            }),
            Ok(m) => out.junk.push(format!(
                "markers table row {seq} of chain {chain_id} holds the signed marker {}",
                m.seq
            )),
            Err(why) => out
                .junk
                .push(format!("markers table row {seq} of chain {chain_id}: {why}")),
        }
    }
    out
}

/// The chain's markers in each target (`<target>` is already `<publish>/<chain id>`): per target,
/// its markers or why they could not be read or trusted.
pub(crate) fn read_targets(
    targets: &[PathBuf],
    verifier: &NoteVerifier,
) -> Vec<Result<Vec<Found>, MarkerError>> {
    targets.iter().map(|t| marker::read_place(t, verifier)).collect()
}

/// What a writer's first load of its chain does about markers (the chain holds `size` records
/// with Merkle root `root`; `attested` is the newest checkpoint's size). Returns the sequence
/// number the next marker takes, after writing an open marker when the newest marker is a close
/// marker. Refuses rows beyond a close marker (forged), a chain shorter than its own close
/// marker, and, when a target's markers cannot be read, rows no checkpoint covers (the unread
/// target may hold the close marker that would condemn them).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn at_open(
    client: &tokio_postgres::Client,
    sql: &MarkerSql,
    store: &str,
    chain_id: &str,
    signer: &NoteSigner,
    targets: &[PathBuf],
    size: u64,
    root: Hash,
    attested: u64,
) -> Result<u64, PgError> {
    let refuse = |why: String| PgError::Checkpoint {
        store: store.to_string(),
        chain_id: chain_id.to_string(),
        why,
    };
    let verifier = signer.verifier();
    let table = match read_table(client, &sql.read, chain_id, &verifier).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(refuse(
                "the store's schema predates close/open markers (no markers table): \
                 run `cordon audit init-postgres --store <its URL>` as its administrator"
                    .into(),
            ));
        }
        Err(e) => return Err(PgError::db(store, "read the chain's markers")(e)),
    };
    for why in &table.junk {
        tracing::error!(store, problem = %why, "audit store: a markers table row is not this chain's signed marker (inserted by someone else?); ignored");
    }
    let own = table.valid;
    let published = {
        let (t, v) = (targets.to_vec(), verifier.clone());
        tokio::task::spawn_blocking(move || read_targets(&t, &v))
            .await
            .map_err(|e| refuse(format!("reading the publication targets' markers failed: {e}")))?
    };
    let mut places = vec![own.clone()];
    let mut unreadable = None;
    for (t, r) in targets.iter().zip(published) {
        match r {
            Ok(found) => places.push(found),
            Err(e) => {
                tracing::error!(store, target = %t.display(), error = %e,
                    "audit store: a publication target's close/open markers cannot be read or are not this chain's; ignored");
                unreadable = Some(e);
            }
        }
    }
    let markers = marker::merge(places).map_err(|e| refuse(format!("bad close/open marker: {e}")))?;
    // Above every valid marker; `write` moves it to the next number no row holds.
    let next_seq = marker::next_seq(&markers);
    let Some(closed) = markers.last().filter(|f| f.marker.kind == MarkerKind::Closed) else {
        if let Some(e) = unreadable
            && size > attested
        {
            return Err(refuse(format!(
                "records {attested}..{size} are covered by no checkpoint and a publication target's markers \
                 cannot be checked ({e}): refusing to adopt them until it can"
            )));
        }
        return Ok(next_seq);
    };
    let closed_at = closed.marker.size;
    if size == closed_at && closed.marker.root != root {
        return Err(refuse(format!(
            "the chain's {size} records do not hash to the root its clean shutdown signed ({}): \
             they were rewritten while its writer was stopped",
            closed.path.display()
        )));
    }
    if size > closed_at {
        return Err(refuse(format!(
            "records {closed_at}..{size} are forged: inserted after the chain's clean shutdown ({}), \
             not by its writer; nothing was adopted or signed",
            closed.path.display()
        )));
    }
    if size < closed_at {
        if own.iter().any(|f| f.marker == closed.marker) {
            return Err(refuse(format!(
                "the chain was closed at {closed_at} records and holds {size}: records were removed"
            )));
        }
        // Only a target's (a second writer forking the chain, or a database restored from an
        // older copy): the chain opens, its publications are refused and counted, and `verify`
        // names the shorter chain; the open marker keeps a later crash tail from looking forged.
        tracing::error!(store, marker = %closed.path.display(), closed_at, size,
            "audit store: a published close marker attests more records than the chain holds");
    }
    let opened = Marker {
        kind: MarkerKind::Opened,
        seq: next_seq,
        size,
        root,
    };
    let written = write(client, sql, store, chain_id, signer, targets, &opened).await?;
    Ok(written + 1)
}

/// Sign `m`, insert it into the table (an error if that fails: the marker is the chain's claim)
/// and publish it to every target, where a failure is only logged (the next marker the chain
/// writes publishes every table marker a target lacks). The marker takes the first sequence
/// number from `m.seq` on that no row holds (somebody else's rows may hold any). Returns the
/// sequence number written.
pub(crate) async fn write(
    client: &tokio_postgres::Client,
    sql: &MarkerSql,
    store: &str,
    chain_id: &str,
    signer: &NoteSigner,
    targets: &[PathBuf],
    m: &Marker,
) -> Result<u64, PgError> {
    let mut m = m.clone();
    let mut tries = 0;
    loop {
        // A number somebody else's row already holds is skipped (a few times: each retry
        // starts after the last conflict).
        let from = i64::try_from(m.seq).map_err(|_| PgError::InvalidInput {
            what: "marker sequence number",
            why: "exceeds the bigint range",
        })?;
        let free: Option<i64> = client
            .query_one(&sql.free_seq, &[&chain_id, &from])
            .await
            .map_err(PgError::db(store, "find a free marker number"))?
            .try_get(0)
            .map_err(PgError::db(store, "find a free marker number"))?;
        m.seq = free
            .and_then(|f| u64::try_from(f).ok())
            .ok_or(PgError::InvalidInput {
                what: "marker sequence number",
                why: "no free number left in the bigint range",
            })?;
        let note = m.sign(signer).map_err(|e| PgError::Checkpoint {
            store: store.to_string(),
            chain_id: chain_id.to_string(),
            why: format!("signing a close/open marker failed: {e}"),
        })?;
        let seq = i64::try_from(m.seq).unwrap_or(i64::MAX);
        match client.execute(&sql.insert, &[&chain_id, &seq, &note]).await {
            Ok(_) => break,
            // Taken between the search and the insert.
            Err(e) if tries < 3 && e.code().map(|c| c.code()) == Some("23505") => {
                tries += 1;
                m.seq += 1;
            }
            Err(e) => return Err(PgError::db(store, "insert a close/open marker")(e)),
        }
    }
    // Every valid marker of the table, so one whose publication failed earlier goes out now
    // (Ed25519 signatures are deterministic: re-signing gives the table's bytes).
    let own = read_table(client, &sql.read, chain_id, &signer.verifier())
        .await
        .ok()
        .flatten()
        .map(|t| t.valid)
        .unwrap_or_default();
    let mut notes: Vec<(String, String)> = Vec::new();
    for f in own {
        if let Ok(n) = f.marker.sign(signer) {
            notes.push((f.marker.file_name(), n));
        }
    }
    let (targets, store_name) = (targets.to_vec(), store.to_string());
    let _ = tokio::task::spawn_blocking(move || publish(&store_name, &targets, &notes)).await;
    Ok(m.seq)
}

/// Create each marker note in each target unless it is there already.
fn publish(store: &str, targets: &[PathBuf], notes: &[(String, String)]) {
    for t in targets {
        for (name, note) in notes {
            if t.join(marker::MARKER_DIR).join(name).exists() {
                continue;
            }
            if let Err(e) = marker::write_marker(t, name, note) {
                tracing::warn!(store, target = %t.display(), marker = %name, error = %e,
                    "audit store: publishing a close/open marker failed");
            }
        }
    }
}

/// The forged rows a chain's markers reveal (table and targets, as [`at_open`] reads them):
/// `Some((closed at, the marker's place))` when the newest marker is a close marker below
/// `records`. For `verify`.
pub(crate) fn forged(markers: &[Found], records: u64) -> Option<(u64, &Path)> {
    marker::forged_after(markers, records).map(|f| (f.marker.size, f.path.as_path()))
}
