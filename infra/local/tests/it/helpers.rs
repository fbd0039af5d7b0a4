use cafe_localstack::{Service, StackConfig, health};

/// The stack's configuration, after checking the service a test needs answers.
/// A stack that is down fails the test with the command that starts it; never a skip.
pub async fn stack_with(service: Service) -> StackConfig {
    let cfg = StackConfig::load().expect("configuration loads");
    if let Err(why) = health::probe(&cfg, service).await {
        panic!(
            "{} is not reachable on port {} ({why}); start the stack with `infra/local/dev.sh up`",
            service.name(),
            service.port(&cfg)
        );
    }
    cfg
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}
