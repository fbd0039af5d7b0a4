//! Protocol-level health probes: a service is healthy when it answers a real request
//! with the client the project uses, not merely when its port accepts a connection.

use std::time::Duration;

use crate::aws;
use crate::config::StackConfig;
use crate::service::Service;

/// Asks one service a trivial question; `Err` carries why it did not answer.
pub async fn probe(cfg: &StackConfig, service: Service) -> Result<(), String> {
    let fut = async {
        match service {
            Service::Kinesis => {
                let sdk = aws::probe_sdk_config(cfg).await;
                aws::kinesis(&sdk, cfg)
                    .list_streams()
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| format!("{e:?}"))
            }
            Service::DynamoDb => {
                let sdk = aws::probe_sdk_config(cfg).await;
                aws::dynamodb(&sdk, cfg)
                    .list_tables()
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| format!("{e:?}"))
            }
            Service::Sqs => {
                let sdk = aws::probe_sdk_config(cfg).await;
                aws::sqs(&sdk, cfg)
                    .list_queues()
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| format!("{e:?}"))
            }
            Service::Moto => {
                let sdk = aws::probe_sdk_config(cfg).await;
                aws::cloudwatch(&sdk, cfg)
                    .list_dashboards()
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| format!("{e:?}"))
            }
            Service::Postgres => {
                let (client, conn) = tokio_postgres::connect(&cfg.postgres_url("postgres"), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let task = tokio::spawn(conn);
                let r = client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
                drop(client);
                let _ = task.await;
                r
            }
            // A cluster node answers PING before it holds any slot: provisioning forms
            // the cluster after every service is up.
            Service::Redis | Service::MemoryDb | Service::MemoryDb2 => {
                let client = redis::Client::open(cfg.redis_node_url(service.port(cfg))).map_err(|e| e.to_string())?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Service::Mongo => {
                let mut opts = mongodb::options::ClientOptions::parse(cfg.mongo_url())
                    .await
                    .map_err(|e| e.to_string())?;
                opts.server_selection_timeout = Some(Duration::from_secs(2));
                opts.connect_timeout = Some(Duration::from_secs(1));
                let client = mongodb::Client::with_options(opts).map_err(|e| e.to_string())?;
                client
                    .database("admin")
                    .run_command(mongodb::bson::doc! { "ping": 1 })
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Service::Lambda => {
                // Any answer from the Invoke API: a function name that is not a binary
                // of the workspace gets the emulator's own "missing function" reply.
                use crate::lambda::{EmulatorInvoker, Invoke, InvokeError};
                let probe = EmulatorInvoker::new(cfg, "-probe-", Duration::from_secs(5));
                match probe.invoke(&aws_lambda_events::event::sqs::SqsEvent::default()).await {
                    Err(InvokeError::Transport { reason, .. }) => Err(reason),
                    Ok(_) | Err(InvokeError::Function { .. }) => Ok(()),
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}
