//! Where a DTM server keeps its transactions.

use std::fmt;

#[cfg(not(all(feature = "mysql", feature = "postgres")))]
use crate::error::Error;
use crate::error::Result;

/// The store a DTM server keeps its transactions in (DTM's `STORE_*` settings).
///
/// Every server started with an equal `Store` value shares its data (a cluster); a
/// [`Store::Boltdb`] is a file in each server's own directory and is never shared. For the
/// SQL stores, [`Store::prepare`] creates DTM's schema first (once per store; it is safe to
/// call again, also from several processes at once).
///
/// ```
/// use dtm_testkit::Store;
///
/// // A Redis key prefix of its own: servers started with this value see each other's
/// // transactions and nobody else's.
/// let shared = Store::local_redis();
/// assert_eq!(shared.clone(), shared);
/// assert_ne!(Store::local_redis(), shared);
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Store {
    /// DTM's embedded store (its default): a file in the server's scratch directory. For
    /// development only: on DTM v1.19.0 a gid that is another gid plus digits (`order-1`,
    /// `order-12`) reads the other's branches, so use fixed-width gids on it.
    #[default]
    Boltdb,
    /// DTM's Redis store.
    Redis {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// ACL user, if any.
        user: Option<String>,
        /// Password, if any (never shown by `Debug` or in errors).
        password: Option<String>,
        /// Prefix of every key DTM writes (`STORE_REDIS_PREFIX`): servers with the same
        /// prefix share their data. Empty means DTM's default, `{a}`.
        prefix: String,
    },
    /// DTM's MySQL / MariaDB store.
    Mysql {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// User.
        user: String,
        /// Password, if any (never shown by `Debug` or in errors).
        password: Option<String>,
        /// The database DTM's tables are in (lowercase letters, digits and `_`).
        database: String,
    },
    /// DTM's PostgreSQL store. Without a password, DTM is given the password `unused`:
    /// DTM v1.19.0 connects to the wrong database when its password is empty (see
    /// [`Store::env`]).
    Postgres {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// User.
        user: String,
        /// Password, if any (never shown by `Debug` or in errors).
        password: Option<String>,
        /// The database (lowercase letters, digits and `_`).
        database: String,
        /// The schema DTM's tables are in (DTM's default: `public`).
        schema: String,
    },
}

impl Store {
    /// Redis on `127.0.0.1:6379` without a password, with a key prefix no other value has
    /// ([`Store::unique_redis_prefix`]).
    pub fn local_redis() -> Store {
        Store::Redis {
            host: "127.0.0.1".to_string(),
            port: 6379,
            user: None,
            password: None,
            prefix: Store::unique_redis_prefix(),
        }
    }

    /// MySQL / MariaDB on `127.0.0.1:3306` as `root` without a password, DTM's tables in
    /// `database`.
    pub fn local_mysql(database: &str) -> Store {
        Store::Mysql {
            host: "127.0.0.1".to_string(),
            port: 3306,
            user: "root".to_string(),
            password: None,
            database: database.to_string(),
        }
    }

    /// PostgreSQL on `127.0.0.1:5432` as `postgres` without a password, DTM's tables in
    /// the schema `public` of `database`.
    pub fn local_postgres(database: &str) -> Store {
        Store::Postgres {
            host: "127.0.0.1".to_string(),
            port: 5432,
            user: "postgres".to_string(),
            password: None,
            database: database.to_string(),
            schema: "public".to_string(),
        }
    }

    /// A Redis key prefix unique to this call ([`crate::unique_gid`]). Wrapped in `{}` (a
    /// Redis Cluster hash tag, as DTM's default `{a}` is) so that all of one server's keys
    /// live in one slot.
    pub fn unique_redis_prefix() -> String {
        format!("{{{}}}", crate::unique_gid("dtm-testkit"))
    }

    /// DTM's name of the store's driver (`STORE_DRIVER`).
    pub fn driver(&self) -> &'static str {
        match self {
            Store::Boltdb => "boltdb",
            Store::Redis { .. } => "redis",
            Store::Mysql { .. } => "mysql",
            Store::Postgres { .. } => "postgres",
        }
    }

    /// The environment variables that put a DTM server on this store.
    ///
    /// For the SQL stores DTM's connection pool is capped at 30 (DTM's default is 500 per
    /// server, and a few servers sharing a local MariaDB could exhaust its default 151
    /// connections); a [`crate::DtmServerConfig::env`] entry overrides it. On PostgreSQL
    /// the password is never empty: DTM v1.19.0 writes its connection string as
    /// `password=<p> dbname='<db>'`, so an empty one turns `dbname=...` into the password
    /// and DTM connects to the user's database; `unused` is passed instead (a server that
    /// trusts the connection never asks for it).
    pub fn env(&self) -> Vec<(String, String)> {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut env = vec![kv("STORE_DRIVER", self.driver())];
        if let Some(server) = self.server() {
            env.push(kv("STORE_HOST", server.host));
            env.push(kv("STORE_PORT", &server.port.to_string()));
            if let Some(u) = server.user {
                env.push(kv("STORE_USER", u));
            }
            let password = match self {
                // DTM v1.19.0 writes its PostgreSQL connection string as `... password=<p>
                // dbname='<db>' ...`: an empty password makes `dbname=...` the password and
                // DTM then connects to the user's database. A server that trusts the
                // connection never asks for this placeholder.
                Store::Postgres { .. } => Some(
                    server
                        .password
                        .filter(|p| !p.is_empty())
                        .unwrap_or("unused"),
                ),
                _ => server.password,
            };
            if let Some(p) = password {
                env.push(kv("STORE_PASSWORD", p));
            }
        }
        match self {
            Store::Boltdb => {}
            Store::Redis { prefix, .. } => {
                if !prefix.is_empty() {
                    env.push(kv("STORE_REDIS_PREFIX", prefix));
                }
            }
            Store::Mysql { database, .. } => env.push(kv("STORE_DB", database)),
            Store::Postgres {
                database, schema, ..
            } => {
                env.push(kv("STORE_DB", database));
                env.push(kv("STORE_SCHEMA", schema));
            }
        }
        if matches!(self, Store::Mysql { .. } | Store::Postgres { .. }) {
            env.push(kv("STORE_MAX_OPEN_CONNS", "30"));
            env.push(kv("STORE_MAX_IDLE_CONNS", "30"));
        }
        env
    }

    /// Where a Redis, MySQL or PostgreSQL store is reached; `None` for boltdb.
    fn server(&self) -> Option<Server<'_>> {
        let user = match self {
            Store::Boltdb => return None,
            Store::Redis { user, .. } => user.as_deref(),
            Store::Mysql { user, .. } | Store::Postgres { user, .. } => Some(user.as_str()),
        };
        match self {
            Store::Boltdb => None,
            Store::Redis {
                host,
                port,
                password,
                ..
            }
            | Store::Mysql {
                host,
                port,
                password,
                ..
            }
            | Store::Postgres {
                host,
                port,
                password,
                ..
            } => Some(Server {
                host,
                port: *port,
                user,
                password: password.as_deref(),
            }),
        }
    }

    /// The store's password, if it has one (to redact it from DTM's log).
    pub(crate) fn password(&self) -> Option<&str> {
        self.server()
            .and_then(|s| s.password)
            .filter(|p| !p.is_empty())
    }

    /// Makes the store ready for DTM servers: on MySQL / MariaDB, creates the database and
    /// DTM's tables (feature `mysql`); on PostgreSQL, the database, the schema and DTM's
    /// tables (feature `postgres`); nothing on boltdb and Redis.
    ///
    /// Idempotent: it only creates what is missing (DTM's own schema files drop the tables
    /// first; these statements do not), so call it before every server you start, from as
    /// many tests and processes as you like; servers already running keep their data.
    ///
    /// Without the feature a SQL store is refused with [`crate::Error::FeatureDisabled`];
    /// [`crate::schema`] has the statements to run yourself.
    pub async fn prepare(&self) -> Result<()> {
        match self {
            Store::Boltdb | Store::Redis { .. } => Ok(()),
            #[cfg(feature = "mysql")]
            Store::Mysql {
                host,
                port,
                user,
                password,
                database,
            } => {
                crate::schema::prepare_mysql(host, *port, user, password.as_deref(), database).await
            }
            #[cfg(not(feature = "mysql"))]
            Store::Mysql { .. } => Err(Error::FeatureDisabled {
                store: "mysql",
                feature: "mysql",
            }),
            #[cfg(feature = "postgres")]
            Store::Postgres {
                host,
                port,
                user,
                password,
                database,
                schema,
            } => {
                crate::schema::prepare_postgres(
                    host,
                    *port,
                    user,
                    password.as_deref(),
                    database,
                    schema,
                )
                .await
            }
            #[cfg(not(feature = "postgres"))]
            Store::Postgres { .. } => Err(Error::FeatureDisabled {
                store: "postgres",
                feature: "postgres",
            }),
        }
    }
}

impl Store {
    /// The `Debug` of a store reached at a server, as far as all share it: the address, the
    /// user (`user`, as the variant holds it) and the password, redacted.
    fn debug_server<'a, 'b>(
        &self,
        f: &'a mut fmt::Formatter<'b>,
        name: &str,
        user: &dyn fmt::Debug,
    ) -> fmt::DebugStruct<'a, 'b> {
        let mut d = f.debug_struct(name);
        if let Some(server) = self.server() {
            d.field("host", &server.host)
                .field("port", &server.port)
                .field("user", user)
                .field("password", &server.password.map(|_| "***"));
        }
        d
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Boltdb => f.write_str("Boltdb"),
            Store::Redis { user, prefix, .. } => self
                .debug_server(f, "Redis", user)
                .field("prefix", prefix)
                .finish(),
            Store::Mysql { user, database, .. } => self
                .debug_server(f, "Mysql", user)
                .field("database", database)
                .finish(),
            Store::Postgres {
                user,
                database,
                schema,
                ..
            } => self
                .debug_server(f, "Postgres", user)
                .field("database", database)
                .field("schema", schema)
                .finish(),
        }
    }
}

/// Where a store is reached, borrowed from its [`Store`] value.
struct Server<'a> {
    host: &'a str,
    port: u16,
    /// Redis's is optional.
    user: Option<&'a str>,
    password: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn boltdb_is_the_default_and_says_so() {
        assert_eq!(Store::default(), Store::Boltdb);
        assert_eq!(
            Store::Boltdb.env(),
            [("STORE_DRIVER".to_string(), "boltdb".to_string())]
        );
    }

    #[test]
    fn redis_env_and_unique_prefixes() {
        let s = Store::local_redis();
        let env = s.env();
        assert_eq!(get(&env, "STORE_DRIVER"), Some("redis"));
        assert_eq!(get(&env, "STORE_HOST"), Some("127.0.0.1"));
        assert_eq!(get(&env, "STORE_PORT"), Some("6379"));
        assert_eq!(get(&env, "STORE_PASSWORD"), None);
        let prefix = get(&env, "STORE_REDIS_PREFIX").unwrap_or_default();
        assert!(prefix.starts_with("{dtm-testkit-") && prefix.ends_with('}'));
        assert_ne!(Store::unique_redis_prefix(), Store::unique_redis_prefix());
    }

    #[test]
    fn sql_env() {
        let env = Store::local_mysql("dtm_t").env();
        assert_eq!(get(&env, "STORE_DRIVER"), Some("mysql"));
        assert_eq!(get(&env, "STORE_USER"), Some("root"));
        assert_eq!(get(&env, "STORE_DB"), Some("dtm_t"));
        assert_eq!(get(&env, "STORE_MAX_OPEN_CONNS"), Some("30"));
        let env = Store::local_postgres("dtm_t").env();
        assert_eq!(get(&env, "STORE_DRIVER"), Some("postgres"));
        assert_eq!(get(&env, "STORE_PORT"), Some("5432"));
        assert_eq!(get(&env, "STORE_SCHEMA"), Some("public"));
        // Never empty: DTM would connect to another database (see `env`).
        assert_eq!(get(&env, "STORE_PASSWORD"), Some("unused"));
    }

    #[test]
    fn debug_hides_passwords() {
        let s = Store::Mysql {
            host: "db".into(),
            port: 3306,
            user: "u".into(),
            password: Some("s3cret-pw".into()),
            database: "d".into(),
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("s3cret-pw"), "{dbg}");
        assert!(dbg.contains("***"), "{dbg}");
        assert_eq!(s.password(), Some("s3cret-pw"));
        assert_eq!(get(&s.env(), "STORE_PASSWORD"), Some("s3cret-pw"));
    }

    #[test]
    fn debug_of_every_store() {
        let redis = Store::Redis {
            host: "h".into(),
            port: 1,
            user: None,
            password: Some(String::new()),
            prefix: "p".into(),
        };
        assert_eq!(
            format!("{redis:?}"),
            r#"Redis { host: "h", port: 1, user: None, password: Some("***"), prefix: "p" }"#
        );
        assert_eq!(
            format!("{:?}", Store::local_mysql("d")),
            r#"Mysql { host: "127.0.0.1", port: 3306, user: "root", password: None, database: "d" }"#
        );
        assert_eq!(
            format!("{:?}", Store::local_postgres("d")),
            r#"Postgres { host: "127.0.0.1", port: 5432, user: "postgres", password: None, database: "d", schema: "public" }"#
        );
        assert_eq!(format!("{:?}", Store::Boltdb), "Boltdb");
    }

    #[cfg(not(feature = "mysql"))]
    #[tokio::test]
    async fn sql_without_its_feature_is_refused() {
        let e = Store::local_mysql("x").prepare().await.unwrap_err();
        assert!(matches!(e, Error::FeatureDisabled { .. }), "{e}");
    }
}
