# Production sizes at the seed's scale (5 M orders a day, a 10x morning peak): the
# deployment `cafe cost` prices. Copy it and fill in the first block:
# `terraform plan -var-file=production.tfvars`.

environment  = "prod"
worker_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cafe:1.0.0"
jwt_issuer   = "https://your-identity-provider.example.com/"
jwt_audience = ["cloudcafe-api"]
alarm_email  = "sre-oncall@example.com"

# The stream: provisioned is about a quarter of on-demand's price at this volume; 9
# shards carry the peak's 1.9 MB/s in and seven applications' reads with headroom.
kinesis_mode   = "PROVISIONED"
kinesis_shards = 9

# Workers: two tasks per application (one holds every lease while the other restarts),
# up to one per shard under lag; ARM is a fifth cheaper on Fargate.
worker_count        = 2
worker_max_count    = 9
worker_architecture = "ARM64"

# Stores.
aurora_min_acu        = 0.5
aurora_max_acu        = 16
docdb_instance_class  = "db.r6g.large"
docdb_instance_count  = 2
elasticache_node_type = "cache.m7g.large"
memorydb_node_type    = "db.r6g.large"
redshift_base_rpu     = 8
