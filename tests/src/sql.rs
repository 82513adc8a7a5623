//! SQL the tests write alike on MariaDB and PostgreSQL, once, generic over the database:
//! statements written with `?` placeholders, run with their binds, a guarded business made
//! of one such statement, and a session killed from another connection.

use std::borrow::Cow;

use dtm_barrier::sql::{BarrierDatabase, DbKind};
use futures_util::future::BoxFuture;
use sqlx::mysql::MySqlQueryResult;
use sqlx::postgres::PgQueryResult;
use sqlx::Pool;

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub enum Bind {
    /// A `bigint`.
    Int(i64),
    /// A string.
    Text(String),
}

impl From<i64> for Bind {
    fn from(v: i64) -> Bind {
        Bind::Int(v)
    }
}

impl From<String> for Bind {
    fn from(v: String) -> Bind {
        Bind::Text(v)
    }
}

impl From<&str> for Bind {
    fn from(v: &str) -> Bind {
        Bind::Text(v.to_string())
    }
}

/// `sql`, written with `?` placeholders (MariaDB's), in `DB`'s dialect: PostgreSQL numbers
/// them (`$1`, `$2`...). The statements of the tests have no `?` of their own.
pub fn dialect<DB: BarrierDatabase>(sql: &str) -> Cow<'_, str> {
    if DB::KIND == DbKind::Mysql {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    for (n, part) in sql.split('?').enumerate() {
        if n > 0 {
            out.push_str(&format!("${n}"));
        }
        out.push_str(part);
    }
    Cow::Owned(out)
}

/// The number of rows a statement changed, whatever the database (sqlx has no trait for it).
pub trait RowsAffected {
    /// The number of rows changed.
    fn rows(&self) -> u64;
}

impl RowsAffected for MySqlQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// A database the tests write to: [`sqlx::MySql`] and [`sqlx::Postgres`].
pub trait SqlDb: BarrierDatabase {
    /// Runs `sql` (see [`dialect`]) on `conn` with `binds` in order; the number of rows it
    /// changed.
    fn execute<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
        binds: Vec<Bind>,
    ) -> BoxFuture<'c, sqlx::Result<u64>>;

    /// Kills the session of `conn` from a connection of `other` (MariaDB `KILL CONNECTION`,
    /// PostgreSQL `pg_terminate_backend`): the database ends it, rolling back its open
    /// transaction.
    fn kill<'c>(
        conn: &'c mut Self::Connection,
        other: &'c Pool<Self>,
    ) -> BoxFuture<'c, sqlx::Result<()>>;
}

impl<DB> SqlDb for DB
where
    DB: BarrierDatabase,
    DB::QueryResult: RowsAffected,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    fn execute<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
        binds: Vec<Bind>,
    ) -> BoxFuture<'c, sqlx::Result<u64>> {
        Box::pin(async move {
            let sql = dialect::<DB>(sql);
            let mut q = sqlx::query::<DB>(&sql);
            for b in binds {
                q = match b {
                    Bind::Int(v) => q.bind(v),
                    Bind::Text(v) => q.bind(v),
                };
            }
            Ok(q.execute(&mut *conn).await?.rows())
        })
    }

    fn kill<'c>(
        conn: &'c mut Self::Connection,
        other: &'c Pool<Self>,
    ) -> BoxFuture<'c, sqlx::Result<()>> {
        Box::pin(async move {
            let mysql = DB::KIND == DbKind::Mysql;
            let own = if mysql {
                "select cast(connection_id() as signed)"
            } else {
                "select cast(pg_backend_pid() as bigint)"
            };
            let id: i64 = sqlx::query_scalar::<DB, i64>(own)
                .fetch_one(&mut *conn)
                .await?;
            let kill = if mysql {
                format!("kill connection {id}")
            } else {
                format!("select pg_terminate_backend({id})")
            };
            sqlx::raw_sql(&kill).execute(other).await?;
            Ok(())
        })
    }
}

/// [`SqlDb::execute`] on a connection of `pool`.
pub async fn execute_on<DB: SqlDb>(
    pool: &Pool<DB>,
    sql: &str,
    binds: Vec<Bind>,
) -> sqlx::Result<u64> {
    let mut conn = pool.acquire().await?;
    DB::execute(&mut *conn, sql, binds).await
}

/// A guarded business of one statement: runs `sql` with `binds` ([`SqlDb::execute`]), then
/// answers FAILURE with `refusal` when one is given (the write rolls back with the local
/// transaction).
pub fn business<DB: SqlDb>(
    sql: String,
    binds: Vec<Bind>,
    refusal: Option<&'static str>,
) -> impl for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, dtm_barrier::Result<()>> + Send + 'static
{
    move |conn| {
        Box::pin(async move {
            DB::execute(conn, &sql, binds).await?;
            match refusal {
                Some(why) => Err(dtm_barrier::Error::failure(why)),
                None => Ok(()),
            }
        })
    }
}
