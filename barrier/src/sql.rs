//! The barrier on SQL databases (MySQL/MariaDB and PostgreSQL through sqlx).
//!
//! A [`sqlx::Pool`] of either is a [`TransactionalStore`]: [`BranchBarrier::call`] begins a
//! transaction on it, and the business closure receives the transaction's connection
//! ([`sqlx::MySqlConnection`], [`sqlx::PgConnection`]). Rows are those of the Go SDK's
//! `dtmcli.barrier.*.sql` ([`barrier_ddl`], [`create_barrier_table`]).
//!
//! A saga compensation on MySQL/MariaDB; one whose action never ran is skipped:
//!
//! ```no_run
//! # #[cfg(feature = "mysql")]
//! # async fn handler(pool: sqlx::MySqlPool, query: &str) -> Result<(), dtmcli::Error> {
//! use dtm_barrier::{BranchBarrier, Outcome};
//!
//! let bb = BranchBarrier::from_query(query)?; // op=compensate
//! let outcome = bb
//!     .call(&pool, |conn| {
//!         Box::pin(async move {
//!             sqlx::query("update dtm_busi.user_account set balance = balance + ? where user_id = ?")
//!                 .bind(30_i64)
//!                 .bind(1_i32)
//!                 .execute(&mut *conn)
//!                 .await?;
//!             Ok(())
//!         })
//!     })
//!     .await?;
//! if outcome == Outcome::NullCompensation {
//!     tracing::info!("the action never ran: nothing to undo");
//! }
//! # Ok(()) }
//! ```
//!
//! In a transaction the caller began itself (committed by the barrier, or rolled back with
//! the barrier rows on error), [`BranchBarrier::call_in_transaction`]:
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn handler(pool: sqlx::PgPool, query: &str) -> Result<(), dtmcli::Error> {
//! let bb = dtm_barrier::BranchBarrier::from_query(query)?;
//! let tx = pool.begin().await.map_err(dtm_barrier::Error::from)?;
//! bb.call_in_transaction(tx, |conn| {
//!     Box::pin(async move {
//!         sqlx::query("update dtm_busi.user_account set balance = balance - $1 where user_id = $2")
//!             .bind(30_i64)
//!             .bind(1_i32)
//!             .execute(&mut *conn)
//!             .await?;
//!         Ok(())
//!     })
//! })
//! .await?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;

use futures_util::future::BoxFuture;
use sqlx::{Pool, Transaction};

use crate::barrier::{BarrierRow, BranchBarrier, Layout, Outcome, TableName};
use crate::error::{Error, Result};
use crate::store::sealed::Sealed as StoreSealed;
use crate::store::{msg_local_call, BarrierStore, TransactionalStore};

/// The SQL databases the barrier supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DbKind {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

mod sealed {
    pub trait Sealed {}
}

/// A sqlx database the barrier knows how to write to: [`sqlx::MySql`] and
/// [`sqlx::Postgres`]. Sealed.
pub trait BarrierDatabase: sqlx::Database + sealed::Sealed {
    /// Which dialect.
    const KIND: DbKind;

    /// Inserts a barrier row unless one with the same (gid, branch_id, op, barrier_id)
    /// exists; returns the number of rows inserted (0 or 1).
    fn insert_barrier<'c>(
        conn: &'c mut Self::Connection,
        table: &'c TableName,
        row: BarrierRow<'c>,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
        Self::insert_barriers(conn, table, vec![row])
    }

    /// Inserts several barrier rows in one statement (one round trip), skipping those that
    /// exist; returns how many were inserted.
    fn insert_barriers<'c>(
        conn: &'c mut Self::Connection,
        table: &'c TableName,
        rows: Vec<BarrierRow<'c>>,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// The barrier rows that hold the unique keys of `rows`, as the table's collation
    /// compares them, read with a shared lock in the current transaction: (gid, branch_id,
    /// op, barrier_id) of each. On a table whose collation folds case or accents this
    /// returns another identity's row too, which is how the barrier tells a real duplicate
    /// from a collision (and refuses the latter).
    fn holders_of<'c>(
        conn: &'c mut Self::Connection,
        table: &'c TableName,
        rows: &'c [BarrierRow<'c>],
    ) -> BoxFuture<'c, Result<Vec<BarrierKey>, sqlx::Error>>;

    /// The `reason` of a barrier row, if it exists.
    fn barrier_reason<'c>(
        conn: &'c mut Self::Connection,
        table: &'c TableName,
        row: BarrierRow<'c>,
    ) -> BoxFuture<'c, Result<Option<String>, sqlx::Error>>;

    /// True when the error is one after which re-running the whole transaction is safe and
    /// may succeed: deadlock, lock wait timeout, serialization failure.
    fn is_transient(err: &sqlx::Error) -> bool;
}

/// (gid, branch_id, op, barrier_id) of a barrier row, as read back.
pub type BarrierKey = (String, String, String, String);

// MySQL/MariaDB insert: `INSERT IGNORE`, as the Go SDK, on purpose:
// - the count must tell inserted rows from existing ones, per row, in one statement (the
//   undo ops insert two rows at once, see `insert_barrier_rows`). A plain INSERT fails the
//   whole statement on the first duplicate. `ON DUPLICATE KEY UPDATE id=id` cannot count:
//   sqlx always connects with CLIENT_FOUND_ROWS (sqlx-mysql `connection/stream.rs`), so an
//   unchanged duplicate reports 1 affected row, exactly like an insert.
// - IGNORE's other effect, turning "data too long" and "incorrect string value" into
//   warnings with a truncated or converted value, cannot reach our columns: every value is
//   validated first (`BarrierRow::check`: lengths in characters within the varchar sizes,
//   ASCII for everything but the gid, which utf8mb4 holds whole).
// - a duplicate the collation made (a table created with a folding collation, e.g. by the Go
//   SDK's DDL) is caught by reading the holders back and comparing in Rust
//   (`insert_barriers_exact`). That read costs one round trip whenever a row already
//   existed (duplicates, and every undo op whose action ran), on MySQL/MariaDB only.
// - left to the table: a column narrower than the DDL's or a charset other than utf8mb4
//   would still be truncated or converted by IGNORE on a first insert; the migration
//   statement (`mysql_exact_collation_migration`) also restores sizes and charset.
//
// PostgreSQL rows get their `create_time` (the Go SDK's DDL leaves it NULL and its insert
// does not set it), which barrier retention (`crate::retention`) reads their age from.
fn insert_sql(kind: DbKind, table: &TableName, n: usize) -> String {
    let columns = "(trans_type, gid, branch_id, op, barrier_id, reason)";
    match kind {
        DbKind::Mysql => {
            let values = placeholders(kind, "(?,?,?,?,?,?)", n, ",");
            format!("insert ignore into {table}{columns} values{values}")
        }
        DbKind::Postgres => {
            let values = placeholders(kind, "(?,?,?,?,?,?,now())", n, ",");
            let columns = "(trans_type, gid, branch_id, op, barrier_id, reason, create_time)";
            format!(
                "insert into {table}{columns} values{values} on conflict ON CONSTRAINT uniq_barrier do nothing"
            )
        }
    }
}

/// The unique key of a barrier row, as a condition.
const KEY: &str = "gid=? and branch_id=? and op=? and barrier_id=?";

fn holders_sql(kind: DbKind, table: &TableName, n: usize) -> String {
    let keys = placeholders(kind, &format!("({KEY})"), n, " or ");
    match kind {
        // convert(): sqlx reads a utf8mb4_bin column as VARBINARY, which a String refuses;
        // the bytes are utf8mb4 already and stay as they are.
        DbKind::Mysql => format!(
            "select convert(gid using utf8mb4), convert(branch_id using utf8mb4), \
             convert(op using utf8mb4), convert(barrier_id using utf8mb4) \
             from {table} where {keys} lock in share mode"
        ),
        DbKind::Postgres => {
            format!("select gid, branch_id, op, barrier_id from {table} where {keys} for share")
        }
    }
}

fn select_sql(kind: DbKind, table: &TableName) -> String {
    let key = placeholders(kind, KEY, 1, "");
    format!("select reason from {table} where {key}")
}

/// `n` copies of `group` (written with `?` placeholders) joined by `sep`, in the dialect of
/// `kind`: MySQL's placeholders are `?`, PostgreSQL's are numbered across the copies (`$1`,
/// `$2`...).
fn placeholders(kind: DbKind, group: &str, n: usize, sep: &str) -> String {
    let copies = vec![group; n].join(sep);
    if kind == DbKind::Mysql {
        return copies;
    }
    let mut out = String::with_capacity(copies.len() * 2);
    for (number, part) in copies.split('?').enumerate() {
        if number > 0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "${number}");
        }
        out.push_str(part);
    }
    out
}

macro_rules! impl_barrier_db {
    ($db:ty, $kind:expr, $transient:expr) => {
        impl sealed::Sealed for $db {}
        impl BarrierDatabase for $db {
            const KIND: DbKind = $kind;

            fn insert_barriers<'c>(
                conn: &'c mut Self::Connection,
                table: &'c TableName,
                rows: Vec<BarrierRow<'c>>,
            ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let sql = insert_sql(Self::KIND, table, rows.len());
                    let mut q = sqlx::query(&sql);
                    for row in &rows {
                        q = q
                            .bind(row.trans_type)
                            .bind(row.gid)
                            .bind(row.branch_id)
                            .bind(row.op)
                            .bind(row.barrier_id)
                            .bind(row.reason);
                    }
                    let r = q.execute(&mut *conn).await?;
                    Ok(r.rows_affected())
                })
            }

            fn holders_of<'c>(
                conn: &'c mut Self::Connection,
                table: &'c TableName,
                rows: &'c [BarrierRow<'c>],
            ) -> BoxFuture<'c, Result<Vec<BarrierKey>, sqlx::Error>> {
                Box::pin(async move {
                    let sql = holders_sql(Self::KIND, table, rows.len());
                    let mut q = sqlx::query_as::<_, BarrierKey>(&sql);
                    for row in rows {
                        q = q
                            .bind(row.gid)
                            .bind(row.branch_id)
                            .bind(row.op)
                            .bind(row.barrier_id);
                    }
                    q.fetch_all(&mut *conn).await
                })
            }

            fn barrier_reason<'c>(
                conn: &'c mut Self::Connection,
                table: &'c TableName,
                row: BarrierRow<'c>,
            ) -> BoxFuture<'c, Result<Option<String>, sqlx::Error>> {
                Box::pin(async move {
                    let sql = select_sql(Self::KIND, table);
                    sqlx::query_scalar::<_, String>(&sql)
                        .bind(row.gid)
                        .bind(row.branch_id)
                        .bind(row.op)
                        .bind(row.barrier_id)
                        .fetch_optional(&mut *conn)
                        .await
                })
            }

            fn is_transient(err: &sqlx::Error) -> bool {
                let f: fn(&sqlx::Error) -> bool = $transient;
                f(err)
            }
        }
    };
}

#[cfg(feature = "mysql")]
impl_barrier_db!(sqlx::MySql, DbKind::Mysql, |e| match e {
    sqlx::Error::Database(db) => db
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        // 1213 deadlock, 1205 lock wait timeout
        .is_some_and(|m| matches!(m.number(), 1213 | 1205)),
    _ => false,
});

#[cfg(feature = "postgres")]
impl_barrier_db!(sqlx::Postgres, DbKind::Postgres, |e| match e {
    // deadlock_detected, serialization_failure, lock_not_available
    sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001" | "55P03")),
    _ => false,
});

/// Inserts `rows` (already checked with [`BarrierRow::check`]) unless they exist, like
/// [`BarrierDatabase::insert_barriers`], and returns how many were inserted, but never
/// takes another identity's row for one of ours: when fewer rows than attempted were
/// inserted on MySQL/MariaDB, the rows holding their unique keys are read back (locking,
/// in the same transaction) and compared exactly. If one of `rows` is not there exactly, a
/// folding collation mapped it onto another transaction's row: refused with
/// [`Error::Config`], naming the table and the statement that migrates it
/// ([`mysql_exact_collation_migration`]). PostgreSQL compares exactly and needs no read.
pub(crate) async fn insert_barriers_exact<DB: BarrierDatabase>(
    conn: &mut DB::Connection,
    table: &TableName,
    rows: &[BarrierRow<'_>],
) -> Result<u64> {
    let n = DB::insert_barriers(&mut *conn, table, rows.to_vec()).await?;
    if DB::KIND != DbKind::Mysql || n >= rows.len() as u64 {
        return Ok(n);
    }
    let holders = DB::holders_of(&mut *conn, table, rows).await?;
    // Byte for byte, whatever the table's collation says.
    let same = |(g, b, o, i): &BarrierKey, r: &BarrierRow<'_>| {
        (g.as_str(), b.as_str(), o.as_str(), i.as_str()) == (r.gid, r.branch_id, r.op, r.barrier_id)
    };
    match rows.iter().find(|r| !holders.iter().any(|h| same(h, r))) {
        None => Ok(n),
        Some(r) => {
            // The other transaction's identity goes to the log only, not into the answer.
            let other = holders.iter().find(|h| !rows.iter().any(|r| same(h, r)));
            tracing::error!(table = %table, gid = r.gid, branch_id = r.branch_id, op = r.op, held_by = ?other, "barrier row collides with another identity under the table's collation");
            Err(Error::Config(format!(
                "barrier table {table}: the row (gid {:?}, branch_id {:?}, op {:?}, barrier_id {:?}) is held by another identity that the table's collation compares as equal (case, accent or pad folding), so this request was refused instead of being skipped as a duplicate. Make the table compare exactly: {}",
                r.gid, r.branch_id, r.op, r.barrier_id,
                mysql_exact_collation_migration(table)
            )))
        }
    }
}

/// The statement that makes an existing MySQL/MariaDB barrier table compare gid,
/// branch_id, op and barrier_id exactly (binary collation), as [`barrier_ddl`] creates it.
/// Tables created by the Go SDK's DDL use the default utf8mb4 collation, which folds case
/// and accents (`Case-x-abc` = `case-x-ABC`, `cafe` = `café`). The columns, sizes and
/// rows stay the same, so Go services can keep sharing the table.
pub fn mysql_exact_collation_migration(table: &TableName) -> String {
    format!(
        "ALTER TABLE {table} \
MODIFY gid varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT '', \
MODIFY branch_id varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT '', \
MODIFY op varchar(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT '', \
MODIFY barrier_id varchar(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT ''"
    )
}

/// Commits, telling a refusal the server reported (the transaction is rolled back for sure)
/// from an error whose outcome is unknown (the connection broke during COMMIT).
async fn commit<DB: sqlx::Database>(tx: Transaction<'_, DB>) -> Result<()> {
    match tx.commit().await {
        Ok(()) => Ok(()),
        Err(e @ sqlx::Error::Database(_)) => Err(Error::Sql(e)),
        Err(e) => Err(Error::AmbiguousCommit(Box::new(Error::Sql(e)))),
    }
}

async fn rollback<DB: sqlx::Database>(tx: Transaction<'_, DB>) {
    if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %e, "rollback after a failed barrier call failed; the connection is discarded");
    }
}

impl<DB: BarrierDatabase> StoreSealed for Pool<DB> {}

impl<DB: BarrierDatabase> BarrierStore for Pool<DB> {
    type Conn = DB::Connection;

    async fn back_check(&self, bb: &BranchBarrier) -> Result<()> {
        let table = &bb.config().table;
        let row = bb.msg_row();
        row.check(Layout::Columns)?;
        let mut conn = self.acquire().await?;
        // Outside a transaction the read-back lock is released at once; the comparison is
        // what matters (the select below would otherwise read a folded neighbour's reason).
        insert_barriers_exact::<DB>(&mut conn, table, std::slice::from_ref(&row)).await?;
        let reason = DB::barrier_reason(&mut conn, table, row).await?;
        bb.msg_verdict(reason.as_deref(), table)
    }

    async fn msg_local<F>(&self, bb: BranchBarrier, busi: F) -> Result<()>
    where
        F: for<'c> FnOnce(&'c mut Self::Conn) -> BoxFuture<'c, Result<()>> + Send,
    {
        msg_local_call(self, bb, busi).await
    }
}

impl<DB: BarrierDatabase> TransactionalStore for Pool<DB> {
    fn is_transient(error: &Error) -> bool {
        matches!(error, Error::Sql(e) if DB::is_transient(e))
    }

    type Tx = Transaction<'static, DB>;

    async fn begin_local(&self) -> Result<Self::Tx> {
        Ok(Pool::begin(self).await?)
    }

    fn local_conn(tx: &mut Self::Tx) -> &mut Self::Conn {
        tx
    }

    async fn insert_barrier_rows<'a>(
        conn: &'a mut Self::Conn,
        table: &'a TableName,
        origin: Option<BarrierRow<'a>>,
        current: BarrierRow<'a>,
    ) -> Result<(u64, u64)> {
        Ok(match origin {
            // An undo op inserts its origin's row and its own in one statement (one round
            // trip). The origin row never exists without the undo row (both are written
            // together, or by the action alone), so the count tells the cases apart:
            // 2 = null compensation, 1 = normal undo, 0 = duplicate.
            Some(origin) => {
                match insert_barriers_exact::<DB>(conn, table, &[origin, current]).await? {
                    2 => (1, 1),
                    1 => (0, 1),
                    _ => (0, 0),
                }
            }
            None => (
                0,
                insert_barriers_exact::<DB>(conn, table, &[current]).await?,
            ),
        })
    }

    async fn commit_local(tx: Self::Tx) -> Result<()> {
        commit(tx).await
    }

    async fn rollback_local(tx: Self::Tx) {
        rollback(tx).await
    }
}

/// [`BranchBarrier::call_in_transaction`]'s work.
pub(crate) async fn call_in_transaction<DB, T, F>(
    bb: &BranchBarrier,
    mut tx: Transaction<'_, DB>,
    busi: F,
) -> Result<Outcome<T>>
where
    DB: BarrierDatabase,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T>>,
{
    let bid = bb.next_barrier_id();
    let guarded = match bb.check_identity(&bid, Layout::Columns) {
        Ok(()) => bb.guard::<Pool<DB>, T, _>(&mut tx, &bid, busi).await,
        Err(e) => Err(e.into()),
    };
    match guarded {
        Ok(out) => {
            commit(tx).await?;
            Ok(out)
        }
        Err(f) => {
            rollback(tx).await;
            Err(f.error)
        }
    }
}

/// The DDL of the barrier table, statement by statement, exactly the columns of the Go SDK's
/// `dtmcli.barrier.*.sql`. For a table without schema, no schema is created.
///
/// One deliberate difference on MySQL/MariaDB: gid, branch_id, op and barrier_id compare
/// exactly (`utf8mb4_bin`), where the Go SDK's DDL takes the default collation, which folds
/// case and accents and so lets two gids share one barrier row (see
/// [`mysql_exact_collation_migration`] for existing tables). `utf8mb4_bin` still ignores
/// trailing spaces (PAD SPACE), which is why gids with leading or trailing whitespace are
/// refused ([`dtmcli::identity::check_gid`]); branch ids, ops and barrier ids hold no
/// spaces at all. Columns, sizes and the rows written for the same values are unchanged.
/// sqlx reports binary-collation columns as `VARBINARY`: read them as `Vec<u8>`, or select
/// `convert(gid using utf8mb4)` to get a `String`.
pub fn barrier_ddl(kind: DbKind, table: &TableName) -> Vec<String> {
    let mut v = Vec::new();
    match kind {
        DbKind::Mysql => {
            if let Some(s) = table.schema() {
                v.push(format!(
                    "create database if not exists {s} /*!40100 DEFAULT CHARACTER SET utf8mb4 */"
                ));
            }
            v.push(format!(
                "create table if not exists {table}(
  id bigint(22) PRIMARY KEY AUTO_INCREMENT,
  trans_type varchar(45) default '',
  gid varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin default '',
  branch_id varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin default '',
  op varchar(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin default '',
  barrier_id varchar(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin default '',
  reason varchar(45) default '' comment 'the branch type who insert this record',
  create_time datetime DEFAULT now(),
  update_time datetime DEFAULT now(),
  key(create_time),
  key(update_time),
  UNIQUE key(gid, branch_id, op, barrier_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ));
        }
        DbKind::Postgres => {
            let seq = match table.schema() {
                Some(s) => {
                    v.push(format!("create schema if not exists {s}"));
                    format!("{s}.{}_seq", table.table())
                }
                None => format!("{}_seq", table.table()),
            };
            v.push(format!("create sequence if not exists {seq}"));
            v.push(format!(
                "create table if not exists {table}(
  id bigint NOT NULL DEFAULT NEXTVAL('{seq}'),
  trans_type varchar(45) default '',
  gid varchar(128) default '',
  branch_id varchar(128) default '',
  op varchar(45) default '',
  barrier_id varchar(45) default '',
  reason varchar(45) default '',
  create_time timestamp(0) with time zone DEFAULT NULL,
  update_time timestamp(0) with time zone DEFAULT NULL,
  PRIMARY KEY(id),
  CONSTRAINT uniq_barrier unique(gid, branch_id, op, barrier_id)
)"
            ));
        }
    }
    v
}

/// Checks that a MySQL/MariaDB barrier table holds identities exactly: gid, branch_id, op
/// and barrier_id in utf8mb4 with a binary collation, at least as wide as [`barrier_ddl`]'s
/// columns. Call it at startup: a table created by the Go SDK's DDL (default collation,
/// which folds case and accents) passes every request whose row has no folded neighbour and
/// refuses the others one by one; this finds it at once. The error is [`Error::Config`]
/// with the statement that fixes the table ([`mysql_exact_collation_migration`]).
#[cfg(feature = "mysql")]
pub async fn check_mysql_barrier_table(pool: &sqlx::MySqlPool, table: &TableName) -> Result<()> {
    // (name, character set, collation, width in characters)
    type Column = (String, Option<String>, Option<String>, Option<i64>);
    let cols: Vec<Column> = sqlx::query_as(
        "select cast(column_name as char), cast(character_set_name as char), \
         cast(collation_name as char), cast(character_maximum_length as signed) \
         from information_schema.columns where table_schema = coalesce(?, database()) and table_name = ?",
    )
    .bind(table.schema())
    .bind(table.table())
    .fetch_all(pool)
    .await?;
    if cols.is_empty() {
        return Err(Error::Config(format!(
            "barrier table {table} does not exist (create it with barrier_ddl / create_barrier_table)"
        )));
    }
    let mut wrong = Vec::new();
    for (name, width) in [
        ("gid", 128),
        ("branch_id", 128),
        ("op", 45),
        ("barrier_id", 45),
    ] {
        match cols.iter().find(|c| c.0.eq_ignore_ascii_case(name)) {
            None => wrong.push(format!("{name} is missing")),
            Some((_, charset, collation, len)) => {
                let charset = charset.as_deref().unwrap_or("");
                let collation = collation.as_deref().unwrap_or("");
                // utf8mb4_bin (PAD SPACE; trailing spaces are refused anyway) or
                // utf8mb4_0900_bin (MySQL 8, NO PAD): both compare bytes.
                if charset != "utf8mb4" || !collation.ends_with("_bin") {
                    wrong.push(format!("{name} is {charset}/{collation}"));
                }
                if len.unwrap_or(0) < width {
                    wrong.push(format!(
                        "{name} holds {} characters, not {width}",
                        len.unwrap_or(0)
                    ));
                }
            }
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "barrier table {table} cannot hold identities exactly ({}): two transactions could share a barrier row. Fix it with: {}",
        wrong.join(", "),
        mysql_exact_collation_migration(table)
    )))
}

/// Creates the barrier table (and its schema) if missing.
pub async fn create_barrier_table<DB>(pool: &Pool<DB>, table: &TableName) -> Result<()>
where
    DB: BarrierDatabase,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut conn = pool.acquire().await?;
    for stmt in barrier_ddl(DB::KIND, table) {
        sqlx::raw_sql(&stmt).execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_in_each_dialect() -> Result<()> {
        let t = TableName::new("dtm_barrier.barrier")?;
        let cols = "dtm_barrier.barrier(trans_type, gid, branch_id, op, barrier_id, reason)";
        assert_eq!(
            insert_sql(DbKind::Mysql, &t, 2),
            format!("insert ignore into {cols} values(?,?,?,?,?,?),(?,?,?,?,?,?)")
        );
        let pg_cols =
            "dtm_barrier.barrier(trans_type, gid, branch_id, op, barrier_id, reason, create_time)";
        assert_eq!(
            insert_sql(DbKind::Postgres, &t, 2),
            format!("insert into {pg_cols} values($1,$2,$3,$4,$5,$6,now()),($7,$8,$9,$10,$11,$12,now()) on conflict ON CONSTRAINT uniq_barrier do nothing")
        );
        assert_eq!(
            holders_sql(DbKind::Mysql, &t, 2),
            "select convert(gid using utf8mb4), convert(branch_id using utf8mb4), \
             convert(op using utf8mb4), convert(barrier_id using utf8mb4) from dtm_barrier.barrier \
             where (gid=? and branch_id=? and op=? and barrier_id=?) or \
             (gid=? and branch_id=? and op=? and barrier_id=?) lock in share mode"
        );
        assert_eq!(
            holders_sql(DbKind::Postgres, &t, 2),
            "select gid, branch_id, op, barrier_id from dtm_barrier.barrier where \
             (gid=$1 and branch_id=$2 and op=$3 and barrier_id=$4) or \
             (gid=$5 and branch_id=$6 and op=$7 and barrier_id=$8) for share"
        );
        assert_eq!(
            select_sql(DbKind::Mysql, &t),
            "select reason from dtm_barrier.barrier where gid=? and branch_id=? and op=? and barrier_id=?"
        );
        assert_eq!(
            select_sql(DbKind::Postgres, &t),
            "select reason from dtm_barrier.barrier where gid=$1 and branch_id=$2 and op=$3 and barrier_id=$4"
        );
        Ok(())
    }
}
