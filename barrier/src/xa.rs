//! XA local transactions: the branch side of DTM's XA mode on MySQL/MariaDB and PostgreSQL.
//!
//! DTM calls an XA branch URL twice: first the SDK's global side calls it with `op=action`
//! (phase 1: run the business inside a local XA transaction, register the branch with DTM,
//! prepare), then DTM calls it with `op=commit` or `op=rollback` (phase 2).
//! [`XaLocal::handle`] does both.
//!
//! Phase 1 runs on a **dedicated connection that is closed afterwards**, never a pooled one:
//! MariaDB lets another connection commit a prepared XA branch only after the preparing
//! connection disconnected. Phase 2 tolerates an unknown xid, so repeated commits and
//! rollbacks are harmless, unless the database still lists the xid as prepared (MariaDB
//! says "unknown" while the preparing session is still attached): then it answers
//! [`Error::XaStillPrepared`] and DTM retries. A rollback leaves the barrier row `(xa, gid,
//! branch, action, 01, rollback)` behind as the Go SDK does.
//!
//! ```no_run
//! # #[cfg(feature = "mysql")]
//! # async fn handler(xa: &dtm_barrier::xa::XaLocal<sqlx::MySql, dtmcli::DtmClient>, info: dtmcli::TransInfo) -> Result<(), dtmcli::Error> {
//! xa.handle(&info, |conn| {
//!     Box::pin(async move {
//!         sqlx::query("update dtm_busi.user_account set balance = balance + ? where user_id = ?")
//!             .bind(30_i64)
//!             .bind(2_i64)
//!             .execute(&mut *conn)
//!             .await?;
//!         Ok(())
//!     })
//! })
//! .await?;
//! # Ok(()) }
//! ```

use dtmcli::transport::{BranchRegistration, RegistrationKind, Transport};
use dtmcli::{Op, TransInfo};
use futures_util::future::BoxFuture;
use sqlx::{ConnectOptions, Connection};

use crate::barrier::{BarrierConfig, BarrierRow, Layout};
use crate::error::{Error, Result};
use crate::sql::BarrierDatabase;

/// A database that can run XA branches. Implemented for [`sqlx::MySql`] and
/// [`sqlx::Postgres`].
pub trait XaDatabase: BarrierDatabase {
    /// Starts the local XA transaction.
    fn xa_start(xid: &str) -> String;
    /// Ends it before prepare (MySQL only).
    fn xa_end(xid: &str) -> Option<String>;
    /// Prepares it.
    fn xa_prepare(xid: &str) -> String;
    /// Abandons it in phase 1.
    fn xa_abort(xid: &str) -> String;
    /// Phase-2 commit.
    fn xa_commit(xid: &str) -> String;
    /// Phase-2 rollback.
    fn xa_rollback(xid: &str) -> String;
    /// True when phase 2 names an xid the database does not know (already committed or
    /// rolled back, or never prepared).
    fn is_unknown_xid(err: &sqlx::Error) -> bool;
    /// True when the database still lists `xid` as a prepared branch (MySQL/MariaDB
    /// `XA RECOVER`, PostgreSQL `pg_prepared_xacts`): phase 2 then must not report it done.
    fn is_prepared<'c>(
        conn: &'c mut Self::Connection,
        xid: &'c str,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>>;
    /// Host, port, user and database of connection options, for `Debug` output: never the
    /// password (the options' own `Debug` prints it).
    fn describe(options: &<Self::Connection as Connection>::Options) -> String;
    /// Runs one statement with the text protocol (XA statements cannot be prepared).
    fn exec<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
}

/// The [`XaDatabase`] methods written alike for both databases: their connect options have
/// the same getters but no common trait, and sqlx runs a plain `&str` with the text
/// protocol on either connection.
macro_rules! describe_and_exec {
    ($scheme:literal, $options:ty) => {
        fn describe(o: &$options) -> String {
            format!(
                "{}://{}@{}:{}/{}",
                $scheme,
                o.get_username(),
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            )
        }
        fn exec<'c>(
            conn: &'c mut Self::Connection,
            sql: &'c str,
        ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
            Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(drop) })
        }
    };
}

#[cfg(feature = "mysql")]
impl XaDatabase for sqlx::MySql {
    fn xa_start(xid: &str) -> String {
        format!("xa start '{xid}'")
    }
    fn xa_end(xid: &str) -> Option<String> {
        Some(format!("xa end '{xid}'"))
    }
    fn xa_prepare(xid: &str) -> String {
        format!("xa prepare '{xid}'")
    }
    fn xa_abort(xid: &str) -> String {
        format!("xa rollback '{xid}'")
    }
    fn xa_commit(xid: &str) -> String {
        format!("xa commit '{xid}'")
    }
    fn xa_rollback(xid: &str) -> String {
        format!("xa rollback '{xid}'")
    }
    fn is_unknown_xid(err: &sqlx::Error) -> bool {
        match err {
            sqlx::Error::Database(db) => {
                db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .is_some_and(|m| m.number() == 1397)
                    || db.message().contains("XAER_NOTA")
            }
            _ => false,
        }
    }
    fn is_prepared<'c>(
        conn: &'c mut Self::Connection,
        xid: &'c str,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            use sqlx::Row;
            // Rows (formatID, gtrid_length, bqual_length, data), data = gtrid + bqual. Our
            // xids are a gtrid alone (bqual empty, formatID 1, as `XA START 'xid'` makes).
            // Text protocol: XA RECOVER cannot be prepared either.
            // Streamed, stopping at the match: a server may hold many prepared xids.
            let mut rows = sqlx::Executor::fetch(&mut *conn, "xa recover");
            while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
                let gtrid_len: i64 = row.try_get_unchecked(1)?;
                let bqual_len: i64 = row.try_get_unchecked(2)?;
                let data: Vec<u8> = row.try_get_unchecked(3)?;
                if bqual_len == 0 && gtrid_len == xid.len() as i64 && data == xid.as_bytes() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
    describe_and_exec!("mysql", sqlx::mysql::MySqlConnectOptions);
}

#[cfg(feature = "postgres")]
impl XaDatabase for sqlx::Postgres {
    fn xa_start(_xid: &str) -> String {
        "begin".to_string()
    }
    fn xa_end(_xid: &str) -> Option<String> {
        None
    }
    fn xa_prepare(xid: &str) -> String {
        format!("prepare transaction '{xid}'")
    }
    fn xa_abort(_xid: &str) -> String {
        "rollback".to_string()
    }
    fn xa_commit(xid: &str) -> String {
        format!("commit prepared '{xid}'")
    }
    fn xa_rollback(xid: &str) -> String {
        format!("rollback prepared '{xid}'")
    }
    fn is_unknown_xid(err: &sqlx::Error) -> bool {
        match err {
            // undefined_object: "prepared transaction with identifier ... does not exist"
            sqlx::Error::Database(db) => {
                db.code().as_deref() == Some("42704") || db.message().contains("does not exist")
            }
            _ => false,
        }
    }
    fn is_prepared<'c>(
        conn: &'c mut Self::Connection,
        xid: &'c str,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            let found: Option<i32> =
                sqlx::query_scalar("select 1 from pg_prepared_xacts where gid = $1")
                    .bind(xid)
                    .fetch_optional(&mut *conn)
                    .await?;
            Ok(found.is_some())
        })
    }
    describe_and_exec!("postgres", sqlx::postgres::PgConnectOptions);
}

/// The xid of a branch: `<gid>-<branch_id>`. The identity is checked first (the barrier's
/// rules, with no `-` inside the branch id, so `g-01`+`01` and `g`+`01-01` cannot share an
/// xid; [`dtmcli::Error::InvalidInput`]); then an xid longer than 64 bytes (MySQL's gtrid
/// limit) or one that could break out of the quoted literal XA statements need is refused.
pub fn xid(info: &TransInfo) -> Result<String> {
    // The row phase 1 writes: the same check as every barrier backend.
    BarrierRow::of(info, "action", "01", "action").check(Layout::Dashed)?;
    let xid = format!("{}-{}", info.gid, info.branch_id);
    if xid.len() > 64
        || xid
            .chars()
            .any(|c| matches!(c, '\'' | '\\' | '\0') || c.is_control())
    {
        return Err(Error::Config(format!(
            "cannot build an XA xid from gid {:?} and branch {:?}: quotes, backslashes, control characters and more than 64 bytes are refused",
            info.gid, info.branch_id
        )));
    }
    Ok(xid)
}

/// XA local transactions on one database: connection settings for the dedicated phase-1
/// connections, the barrier table, and the transport (`T`: HTTP by default, any
/// [`Transport`], such as `dtmgrpc::DtmGrpcClient`) a branch registers itself through.
pub struct XaLocal<DB: XaDatabase, T: Transport> {
    connect: <DB::Connection as Connection>::Options,
    config: BarrierConfig,
    dtm: T,
}

// By hand: the connect options' own Debug prints the password.
impl<DB: XaDatabase, T: Transport> std::fmt::Debug for XaLocal<DB, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XaLocal")
            .field("database", &DB::describe(&self.connect))
            .field("config", &self.config)
            .field("dtm", &self.dtm)
            .finish()
    }
}

impl<DB: XaDatabase, T: Transport> Clone for XaLocal<DB, T> {
    fn clone(&self) -> Self {
        XaLocal {
            connect: self.connect.clone(),
            config: self.config.clone(),
            dtm: self.dtm.clone(),
        }
    }
}

/// Pins a business closure to the higher-ranked shape [`XaLocal::phase1`] takes.
fn business<DB, R, F>(f: F) -> F
where
    DB: XaDatabase,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<R>>,
{
    f
}

impl<DB: XaDatabase, T: Transport> XaLocal<DB, T> {
    /// XA branches on the database reached with `connect`, registering through `dtm`
    /// (switched to the DTM server a request names, if `dtm` trusts it).
    pub fn new(connect: <DB::Connection as Connection>::Options, dtm: T) -> Self {
        XaLocal {
            connect,
            config: BarrierConfig::default(),
            dtm,
        }
    }

    /// Uses another barrier table.
    pub fn with_config(mut self, config: BarrierConfig) -> Self {
        self.config = config;
        self
    }

    /// Handles one XA branch request: phase 1 (`op=action`) runs `busi`, registers the
    /// branch (`registerBranch {url: phase2_url}`, inside the XA transaction, before
    /// prepare: DTM refuses it once the global transaction is no longer prepared, which
    /// stops late, hanging actions) and returns `busi`'s value; phase 2
    /// (`op=commit`/`op=rollback`) returns `None`.
    pub async fn handle<R, F>(&self, info: &TransInfo, busi: F) -> Result<Option<R>>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        match info.op {
            Op::Commit | Op::Rollback => self.phase2(info).await.map(|()| None),
            Op::Action => {
                let dtm = self.registrar(info)?;
                let url = info
                    .phase2_url
                    .clone()
                    .ok_or_else(|| Error::Config("XA branch request without phase2_url".into()))?;
                let reg = BranchRegistration::new(
                    info.gid.clone(),
                    info.branch_id.clone(),
                    RegistrationKind::Xa { url },
                );
                let registered = business::<DB, R, _>(move |conn| {
                    Box::pin(async move {
                        let v = busi(conn).await?;
                        dtm.register(&reg).await?;
                        Ok(v)
                    })
                });
                self.phase1(info, registered).await.map(Some)
            }
            ref other => Err(Error::Config(format!("XA branch called with op {other}"))),
        }
    }

    /// The transport to register through: the DTM server the request names, if trusted.
    fn registrar(&self, info: &TransInfo) -> Result<T> {
        Ok(match info.dtm.as_deref() {
            Some(server) => self.dtm.with_server(server)?,
            None => self.dtm.clone(),
        })
    }

    async fn connect(&self) -> Result<DB::Connection> {
        Ok(self.connect.connect().await?)
    }

    /// Phase 1 without registering: on a dedicated connection, start the XA transaction,
    /// write the barrier row, run `busi`, end and prepare it (or roll it back if anything
    /// failed), then close the connection. [`XaLocal::handle`] uses it with a `busi` that
    /// registers the branch; a workflow's XA step records its own marker instead.
    pub async fn phase1<R, F>(&self, info: &TransInfo, busi: F) -> Result<R>
    where
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<R>>,
    {
        let xid = xid(info)?;
        let mut conn = self.connect().await?;
        let span = tracing::debug_span!("xa_phase1", gid = %info.gid, branch_id = %info.branch_id, xid = %xid);
        let _enter = span.enter();
        DB::exec(&mut conn, &DB::xa_start(&xid)).await?;
        let result = self.phase1_body(&mut conn, info, busi).await;
        let end = match DB::xa_end(&xid) {
            Some(sql) => DB::exec(&mut conn, &sql).await.map_err(Error::from),
            None => Ok(()),
        };
        let result = match (result, end) {
            (Ok(v), Ok(())) => DB::exec(&mut conn, &DB::xa_prepare(&xid))
                .await
                .map(|()| v)
                .map_err(Error::from),
            (Err(e), _) | (Ok(_), Err(e)) => {
                if let Err(re) = DB::exec(&mut conn, &DB::xa_abort(&xid)).await {
                    tracing::warn!(error = %re, "xa rollback after a failed phase 1 failed");
                }
                Err(e)
            }
        };
        if let Err(e) = conn.close().await {
            tracing::warn!(error = %e, "closing the XA connection failed");
        }
        result
    }

    async fn phase1_body<'c, R, F>(
        &self,
        conn: &'c mut DB::Connection,
        info: &TransInfo,
        busi: F,
    ) -> Result<R>
    where
        F: FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<R>>,
    {
        let row = BarrierRow::of(info, "action", "01", "action");
        DB::insert_barrier(&mut *conn, &self.config.table, row).await?;
        busi(conn).await
    }

    /// Phase 2: commit or roll back the prepared branch `<gid>-<branch_id>`. An unknown
    /// xid (already done) is success. After a rollback, the barrier row
    /// `(trans_type, gid, branch, action, 01, rollback)` is written.
    pub async fn phase2(&self, info: &TransInfo) -> Result<()> {
        let xid = xid(info)?;
        let sql = match info.op {
            Op::Commit => DB::xa_commit(&xid),
            Op::Rollback => DB::xa_rollback(&xid),
            ref other => return Err(Error::Config(format!("XA phase 2 called with op {other}"))),
        };
        let mut conn = self.connect().await?;
        let result = match DB::exec(&mut conn, &sql).await {
            // "Unknown xid" usually means already done (a repeated phase 2), but MariaDB also
            // answers it while the session that prepared the xid is still attached (closing a
            // connection returns before the server detached it). Reporting that as done would
            // let DTM record a commit that never lands, so check the xid is really gone.
            Err(e) if DB::is_unknown_xid(&e) => match DB::is_prepared(&mut conn, &xid).await {
                Ok(false) => {
                    tracing::debug!(gid = %info.gid, branch_id = %info.branch_id, %xid, "xa {}: unknown xid, already done", info.op);
                    Ok(())
                }
                Ok(true) => {
                    tracing::warn!(gid = %info.gid, branch_id = %info.branch_id, %xid, "xa {}: unknown xid but still prepared (its session is still attached); DTM will retry", info.op);
                    Err(Error::XaStillPrepared {
                        xid: xid.clone(),
                        op: info.op.to_string(),
                    })
                }
                // Cannot tell (on MySQL 8, XA RECOVER needs XA_RECOVER_ADMIN): retryable,
                // never "done".
                Err(re) => {
                    tracing::warn!(gid = %info.gid, branch_id = %info.branch_id, %xid, error = %re, "xa {}: unknown xid and listing the prepared xids failed", info.op);
                    Err(Error::Sql(re))
                }
            },
            other => other.map_err(Error::from),
        };
        let result = match result {
            Ok(()) if info.op == Op::Rollback => {
                // Count ignored, as in Go: the row only records the rollback (late actions
                // are stopped by registerBranch), so a folded neighbour on a legacy table is
                // no reason to fail a rollback that already happened.
                let row = BarrierRow::of(info, "action", "01", "rollback");
                DB::insert_barrier(&mut conn, &self.config.table, row)
                    .await
                    .map(drop)
                    .map_err(Error::from)
            }
            other => other,
        };
        if let Err(e) = conn.close().await {
            tracing::warn!(error = %e, "closing the XA phase-2 connection failed");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtmcli::TransType;

    #[test]
    fn xids_refuse_identities_that_could_collide() {
        let info = |gid: &str, branch: &str| TransInfo::new(gid, TransType::Xa, branch, Op::Action);
        assert_eq!(xid(&info("g-01", "01")).ok().as_deref(), Some("g-01-01"));
        // `g-01`+`01` and `g`+`01-01` would both be `g-01-01`.
        let e = xid(&info("g", "01-01")).err();
        assert!(e.as_ref().is_some_and(Error::is_invalid_input), "{e:?}");
        for (gid, branch) in [("g ", "01"), ("a\0b", "01"), ("q'x", "01")] {
            let e = xid(&info(gid, branch)).err();
            assert!(
                e.as_ref().is_some_and(Error::is_invalid_input),
                "{gid:?}: {e:?}"
            );
        }
        // MySQL's gtrid holds 64 bytes.
        assert!(xid(&info(&"x".repeat(61), "01")).is_ok());
        assert!(xid(&info(&"x".repeat(62), "01")).is_err());
    }

    /// The `Debug` of an `XaLocal` on the database of `url` (password `s3cr3t-pw`) shows
    /// where it connects (`shown`), never the password.
    fn debug_hides_the_password<DB: XaDatabase>(url: &str, shown: &str) -> Result<()> {
        use std::str::FromStr;
        let opts = <DB::Connection as Connection>::Options::from_str(url)?;
        let dtm = dtmcli::DtmClient::new("http://127.0.0.1:36789/api/dtmsvr")?;
        let text = format!("{:?}", XaLocal::<DB, _>::new(opts, dtm));
        assert!(!text.contains("s3cr3t-pw"), "{text}");
        assert!(text.contains(shown), "{text}");
        Ok(())
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn debug_never_prints_the_password() -> Result<()> {
        debug_hides_the_password::<sqlx::MySql>(
            "mysql://bank:s3cr3t-pw@db.example:3307/dtm_busi",
            "db.example:3307/dtm_busi",
        )
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn debug_never_prints_the_postgres_password() -> Result<()> {
        debug_hides_the_password::<sqlx::Postgres>(
            "postgres://bank:s3cr3t-pw@db.example:5433/busi",
            "db.example:5433/busi",
        )
    }
}
