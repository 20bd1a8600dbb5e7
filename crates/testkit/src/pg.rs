//! A PostgreSQL database of one test's own, for the tests that run pcsaga on PostgreSQL.
//!
//! The server is `PCSAGA_TEST_PG` (default the local trust-authenticated cluster,
//! `postgres://root@127.0.0.1:5432/postgres`). A test that cannot reach it fails, naming the
//! server and the way to start it; it never skips. The database is dropped with the value.

/// The server the PostgreSQL tests use.
pub fn server() -> String {
    std::env::var("PCSAGA_TEST_PG")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned())
}

/// A database of a unique name on [`server`], dropped on drop.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    /// Its URL, to give pcsaga (`--db`, `PCSAGA_DB`).
    pub url: String,
}

impl TestDatabase {
    /// Creates it; panics (failing the test) when the server cannot be reached.
    pub async fn create() -> Self {
        let server = server();
        let name = format!("pcsaga_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {server} cannot be reached ({e}): these tests need it; set PCSAGA_TEST_PG, or run .ci/run, which starts it"
            )
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        admin.close().await;
        let (base, _) = server.rsplit_once('/').unwrap_or((server.as_str(), ""));
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// The store on it (migrated).
    pub async fn store(&self) -> pcsaga_engine::PgStore {
        pcsaga_engine::PgStore::connect(pcsaga_engine::PgConfig::new(&self.url))
            .await
            .unwrap_or_else(|e| panic!("the PostgreSQL store on {} opens: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: drop cannot await, and the test's runtime may be ending.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = sqlx::PgPool::connect(&server()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                }
            });
        })
        .join();
    }
}
