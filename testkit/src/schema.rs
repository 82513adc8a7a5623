//! DTM's SQL store schema, safe to create again and again.
//!
//! DTM v1.19.0 ships its store schema as `sqls/dtmsvr.storage.mysql.sql` and
//! `sqls/dtmsvr.storage.postgres.sql` in its module. Those files are not safe to re-run:
//! each `CREATE TABLE IF NOT EXISTS` follows a `drop table IF EXISTS`, which would wipe the
//! transactions of servers already running on the store, and the MySQL file names the
//! database `dtm`. The statements here are those tables, columns, keys and indexes (the
//! unique keys DTM relies on: one row per gid, one per gid + branch id + op) without the
//! drops, in the database or schema you name, so a store can be prepared before every
//! server of a cluster and by concurrent tests. Written from the v1.19.0 files, so a gid
//! kept by a server on this schema is kept as DTM's own schema would keep it.
//!
//! Names are lowercase letters, digits and `_` (at most 63, not starting with a digit):
//! they go into DDL unquoted by DTM (its PostgreSQL `search_path` folds case), so anything
//! else is refused rather than quoted.

use crate::error::{Error, Result};

/// Checks a database or schema name (see the module docs).
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 63 {
        return invalid("it must be 1 to 63 characters long");
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return invalid("it must not start with a digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return invalid("only lowercase ASCII letters, digits and '_' are allowed");
    }
    Ok(())
}

/// The statements that create DTM's MySQL / MariaDB store in `database` (the database
/// itself included) unless it exists.
pub fn mysql_ddl(database: &str) -> Result<Vec<String>> {
    check_name("database", database)?;
    let d = database;
    Ok(vec![
        format!("CREATE DATABASE IF NOT EXISTS `{d}` /*!40100 DEFAULT CHARACTER SET utf8mb4 */"),
        format!(
            "CREATE TABLE IF NOT EXISTS `{d}`.trans_global (
  `id` bigint(22) NOT NULL AUTO_INCREMENT,
  `gid` varchar(128) NOT NULL,
  `trans_type` varchar(45) NOT NULL,
  `status` varchar(12) NOT NULL,
  `query_prepared` varchar(1024) NOT NULL,
  `protocol` varchar(45) NOT NULL,
  `create_time` datetime DEFAULT NULL,
  `update_time` datetime DEFAULT NULL,
  `finish_time` datetime DEFAULT NULL,
  `rollback_time` datetime DEFAULT NULL,
  `options` varchar(1024) DEFAULT '',
  `custom_data` varchar(1024) DEFAULT '',
  `next_cron_interval` int(11) DEFAULT NULL,
  `next_cron_time` datetime DEFAULT NULL,
  `owner` varchar(128) NOT NULL DEFAULT '',
  `ext_data` TEXT,
  `result` varchar(1024) DEFAULT '',
  `rollback_reason` varchar(1024) DEFAULT '',
  PRIMARY KEY (`id`),
  UNIQUE KEY `gid` (`gid`),
  KEY `owner` (`owner`),
  KEY `status_next_cron_time` (`status`, `next_cron_time`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{d}`.trans_branch_op (
  `id` bigint(22) NOT NULL AUTO_INCREMENT,
  `gid` varchar(128) NOT NULL,
  `url` varchar(1024) NOT NULL,
  `data` TEXT,
  `bin_data` BLOB,
  `branch_id` VARCHAR(128) NOT NULL,
  `op` varchar(45) NOT NULL,
  `status` varchar(45) NOT NULL,
  `finish_time` datetime DEFAULT NULL,
  `rollback_time` datetime DEFAULT NULL,
  `create_time` datetime DEFAULT NULL,
  `update_time` datetime DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `gid_uniq` (`gid`, `branch_id`, `op`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{d}`.kv (
  `id` bigint(22) NOT NULL AUTO_INCREMENT,
  `cat` varchar(45) NOT NULL,
  `k` varchar(128) NOT NULL,
  `v` TEXT,
  `version` bigint(22) DEFAULT 1,
  `create_time` datetime DEFAULT NULL,
  `update_time` datetime DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `uniq_k` (`cat`, `k`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
        ),
    ])
}

/// The statements that create DTM's PostgreSQL store in `schema` (the schema itself
/// included) unless it exists; run them in the store's database.
pub fn postgres_ddl(schema: &str) -> Result<Vec<String>> {
    check_name("schema", schema)?;
    let s = schema;
    let mut out = vec![format!("CREATE SCHEMA IF NOT EXISTS {s}")];
    out.push(format!(
        "CREATE SEQUENCE IF NOT EXISTS {s}.trans_global_seq"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {s}.trans_global (
  id bigint NOT NULL DEFAULT NEXTVAL('{s}.trans_global_seq'),
  gid varchar(128) NOT NULL,
  trans_type varchar(45) NOT NULL,
  status varchar(45) NOT NULL,
  query_prepared varchar(1024) NOT NULL,
  protocol varchar(45) NOT NULL,
  create_time timestamp(0) with time zone DEFAULT NULL,
  update_time timestamp(0) with time zone DEFAULT NULL,
  finish_time timestamp(0) with time zone DEFAULT NULL,
  rollback_time timestamp(0) with time zone DEFAULT NULL,
  options varchar(1024) DEFAULT '',
  custom_data varchar(1024) DEFAULT '',
  next_cron_interval int DEFAULT NULL,
  next_cron_time timestamp(0) with time zone DEFAULT NULL,
  owner varchar(128) NOT NULL DEFAULT '',
  ext_data text,
  result varchar(1024) DEFAULT '',
  rollback_reason varchar(1024) DEFAULT '',
  PRIMARY KEY (id),
  CONSTRAINT gid UNIQUE (gid)
)"
    ));
    out.push(format!(
        "CREATE INDEX IF NOT EXISTS owner ON {s}.trans_global (owner)"
    ));
    out.push(format!(
        "CREATE INDEX IF NOT EXISTS status_next_cron_time ON {s}.trans_global (status, next_cron_time)"
    ));
    out.push(format!(
        "CREATE SEQUENCE IF NOT EXISTS {s}.trans_branch_op_seq"
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {s}.trans_branch_op (
  id bigint NOT NULL DEFAULT NEXTVAL('{s}.trans_branch_op_seq'),
  gid varchar(128) NOT NULL,
  url varchar(1024) NOT NULL,
  data TEXT,
  bin_data bytea,
  branch_id VARCHAR(128) NOT NULL,
  op varchar(45) NOT NULL,
  status varchar(45) NOT NULL,
  finish_time timestamp(0) with time zone DEFAULT NULL,
  rollback_time timestamp(0) with time zone DEFAULT NULL,
  create_time timestamp(0) with time zone DEFAULT NULL,
  update_time timestamp(0) with time zone DEFAULT NULL,
  PRIMARY KEY (id),
  CONSTRAINT gid_branch_uniq UNIQUE (gid, branch_id, op)
)"
    ));
    out.push(format!("CREATE SEQUENCE IF NOT EXISTS {s}.kv_seq"));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {s}.kv (
  id bigint NOT NULL DEFAULT NEXTVAL('{s}.kv_seq'),
  cat varchar(45) NOT NULL,
  k varchar(128) NOT NULL,
  v TEXT,
  version bigint DEFAULT 1,
  create_time timestamp(0) with time zone DEFAULT NULL,
  update_time timestamp(0) with time zone DEFAULT NULL,
  PRIMARY KEY (id),
  CONSTRAINT uniq_k UNIQUE (cat, k)
)"
    ));
    Ok(out)
}

/// The first line of a statement, to name it in an error.
#[cfg(any(feature = "mysql", feature = "postgres"))]
fn head(stmt: &str) -> &str {
    stmt.lines().next().unwrap_or(stmt).trim_end_matches(" (")
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
fn store_err(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let what = what.into();
    move |e| Error::Store {
        what,
        source: Box::new(e),
    }
}

/// Runs [`mysql_ddl`] on `conn` (bring your own connection: `&mut *pool.acquire().await?`
/// for a pool).
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub async fn create_mysql(conn: &mut sqlx::MySqlConnection, database: &str) -> Result<()> {
    for stmt in mysql_ddl(database)? {
        sqlx::raw_sql(&stmt)
            .execute(&mut *conn)
            .await
            .map_err(store_err(head(&stmt)))?;
    }
    Ok(())
}

/// An arbitrary, fixed advisory-lock key: one schema creation at a time per PostgreSQL
/// server ("dtm_tk" in ASCII).
#[cfg(feature = "postgres")]
const PG_LOCK_KEY: i64 = 0x0000_6474_6d5f_746b;

/// Runs [`postgres_ddl`] on `conn`, connected to the store's database, under an advisory
/// lock: PostgreSQL's `CREATE ... IF NOT EXISTS` can still fail when two sessions create
/// the same table at once.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub async fn create_postgres(conn: &mut sqlx::PgConnection, schema: &str) -> Result<()> {
    let ddl = postgres_ddl(schema)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(store_err("taking the schema lock"))?;
    let mut result = Ok(());
    for stmt in &ddl {
        if let Err(e) = sqlx::raw_sql(stmt).execute(&mut *conn).await {
            result = Err(store_err(head(stmt))(e));
            break;
        }
    }
    // Released with the session too; explicitly, so a caller's pooled connection does
    // not keep it.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(store_err("releasing the schema lock"));
    result.and(unlocked.map(drop))
}

#[cfg(feature = "mysql")]
pub(crate) async fn prepare_mysql(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Result<()> {
    use sqlx::Connection as _;
    check_name("database", database)?;
    let mut opts = sqlx::mysql::MySqlConnectOptions::new()
        .host(host)
        .port(port)
        .username(user);
    if let Some(p) = password {
        opts = opts.password(p);
    }
    let mut conn = sqlx::MySqlConnection::connect_with(&opts)
        .await
        .map_err(store_err(format!(
            "connecting to MySQL at {host}:{port} as {user}"
        )))?;
    let created = create_mysql(&mut conn, database).await;
    let _ = conn.close().await;
    created
}

#[cfg(feature = "postgres")]
pub(crate) async fn prepare_postgres(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
    schema: &str,
) -> Result<()> {
    use sqlx::Connection as _;
    check_name("database", database)?;
    check_name("schema", schema)?;
    let mut opts = sqlx::postgres::PgConnectOptions::new()
        .host(host)
        .port(port)
        .username(user);
    if let Some(p) = password {
        opts = opts.password(p);
    }
    let connect = |db: &str| {
        let opts = opts.clone().database(db);
        let what = format!("connecting to PostgreSQL at {host}:{port} as {user}, database {db}");
        async move {
            sqlx::PgConnection::connect_with(&opts)
                .await
                .map_err(store_err(what))
        }
    };
    // The database first, from the maintenance database (PostgreSQL has no
    // CREATE DATABASE IF NOT EXISTS).
    if database != "postgres" {
        let mut admin = connect("postgres").await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(database)
                .fetch_optional(&mut admin)
                .await
                .map_err(store_err("looking the database up"))?;
        if exists.is_none() {
            match sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
                .execute(&mut admin)
                .await
            {
                Ok(_) => {}
                // Created meanwhile by another session: duplicate_database, or the
                // unique_violation of the catalog when both inserted at once.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
                Err(e) => {
                    let _ = admin.close().await;
                    return Err(store_err(format!("CREATE DATABASE {database}"))(e));
                }
            }
        }
        let _ = admin.close().await;
    }
    let mut conn = connect(database).await?;
    let created = create_postgres(&mut conn, schema).await;
    let _ = conn.close().await;
    created
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("database", "dtm_store_1").is_ok());
        for bad in [
            "",
            "1dtm",
            "Dtm",
            "dtm-x",
            "dtm;drop",
            "a`b",
            &"x".repeat(64),
        ] {
            let e = check_name("database", bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad}: {e}");
        }
        assert!(mysql_ddl("bad name").is_err());
        assert!(postgres_ddl("Public").is_err());
    }

    #[test]
    fn no_drops_and_only_if_not_exists() {
        for stmt in mysql_ddl("d")
            .unwrap()
            .into_iter()
            .chain(postgres_ddl("s").unwrap())
        {
            let l = stmt.to_lowercase();
            assert!(!l.contains("drop"), "{stmt}");
            assert!(l.contains("if not exists"), "{stmt}");
        }
    }

    /// The tables and column names of DTM's own schema files, when a copy is at hand (this
    /// workspace's scripts/install-dtm.sh puts one in .tools/dtm-sqls), match these.
    #[test]
    fn same_columns_as_dtms_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/dtm-sqls");
        for (file, ours) in [
            ("dtmsvr.storage.mysql.sql", mysql_ddl("dtm").unwrap()),
            ("dtmsvr.storage.postgres.sql", postgres_ddl("s").unwrap()),
        ] {
            let Ok(theirs) = std::fs::read_to_string(dir.join(file)) else {
                eprintln!("{file} not found in {}: skipped", dir.display());
                continue;
            };
            assert_eq!(columns(&ours.join(";\n")), columns(&theirs), "{file}");
        }
    }

    /// `table: column, column, ...` for each CREATE TABLE, names without quotes.
    fn columns(sql: &str) -> Vec<String> {
        let mut out = Vec::new();
        for stmt in sql.split(';') {
            let lower = stmt.to_lowercase();
            let Some(at) = lower.find("create table") else {
                continue;
            };
            let body = &stmt[at..];
            let Some(open) = body.find('(') else { continue };
            let name = body[..open]
                .split_whitespace()
                .last()
                .unwrap_or("")
                .rsplit('.')
                .next()
                .unwrap_or("")
                .trim_matches('`')
                .to_string();
            let cols: Vec<String> = body[open + 1..]
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(|w| w.trim_matches('`').to_lowercase())
                .filter(|w| {
                    !w.is_empty()
                        && !["primary", "unique", "key", "constraint", ")"].contains(&w.as_str())
                        && !w.starts_with(')')
                })
                .collect();
            out.push(format!("{name}: {}", cols.join(", ")));
        }
        out
    }
}
