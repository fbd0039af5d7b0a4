data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition

  aurora_id      = "${var.name_prefix}cafe-orders"
  docdb_id       = "${var.name_prefix}cafe-documents"
  elasticache_id = "${var.name_prefix}cafe-cache"
  memorydb_id    = "${var.name_prefix}cafe-inventory"

  # The stores whose password this configuration generates (Redshift's is managed by
  # Redshift itself, and the Data API reads it from Secrets Manager on every call).
  password_stores = toset(["postgres", "mongo", "redis", "memorydb"])

  # The application's user on each store.
  usernames = {
    postgres = "cafe"
    mongo    = "cafe"
    redis    = "default" # AUTH token: ElastiCache's default user
    memorydb = "${var.name_prefix}cafe-inventory"
  }

  passwords = {
    for k, v in aws_secretsmanager_secret_version.credentials : k => sensitive(jsondecode(v.secret_string).password)
  }

  # What the workers read (as ECS secrets): one whole-value URL per store.
  urls = {
    postgres = "postgresql://${local.usernames.postgres}:${local.passwords.postgres}@${aws_rds_cluster.orders.endpoint}:${aws_rds_cluster.orders.port}/${var.orders_database}?sslmode=require"
    # DocumentDB: TLS, its replica set, and no retryable writes (it does not support them).
    # The worker image's CA bundle holds the RDS root DocumentDB's certificate chains to
    # (infra/image/Dockerfile); the driver trusts the file named here.
    mongo    = "mongodb://${local.usernames.mongo}:${local.passwords.mongo}@${aws_docdb_cluster.documents.endpoint}:${aws_docdb_cluster.documents.port}/${var.documents_database}?tls=true&tlsCAFile=/etc/ssl/certs/ca-certificates.crt&replicaSet=rs0&readPreference=secondaryPreferred&retryWrites=false"
    redis    = "rediss://:${local.passwords.redis}@${aws_elasticache_replication_group.cache.primary_endpoint_address}:${aws_elasticache_replication_group.cache.port}"
    memorydb = "rediss://${local.usernames.memorydb}:${local.passwords.memorydb}@${aws_memorydb_cluster.inventory.cluster_endpoint[0].address}:${aws_memorydb_cluster.inventory.cluster_endpoint[0].port}"
  }
}

# ---------------------------------------------------------------------------------------
# Credentials
#
# Only the aws provider is available, so passwords come from Secrets Manager's
# GetRandomPassword (this data source, read at every plan). The first apply stores the
# value in the credentials secret; `ignore_changes` then keeps the stored one, so later
# plans' fresh values are discarded and the password is stable. Everything else (the
# stores, the URL secrets) reads the password back from that secret version.
#
# The passwords are therefore in the Terraform state (as are ElastiCache's auth token
# and MemoryDB's user password whatever the source): keep the state in an encrypted,
# access-controlled backend. To rotate one: `terraform apply -replace=...credentials["x"]`.
# ---------------------------------------------------------------------------------------

data "aws_secretsmanager_random_password" "this" {
  for_each = local.password_stores

  password_length = 40
  # Letters and digits only: safe in a URL without escaping and accepted by every
  # engine's password rules (DocumentDB, RDS and ElastiCache each refuse some punctuation).
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "credentials" {
  for_each = local.password_stores

  #checkov:skip=CKV2_AWS_57: no rotation function exists for these stores' users here; a rotation must also rewrite the URL secret the workers read, so it is a deliberate `-replace` (see above).
  name                    = "${var.name_prefix}cafe/${each.key}/credentials"
  description             = "User and password of the ${each.key} read-model store"
  kms_key_id              = var.secrets_kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "credentials" {
  for_each = local.password_stores

  secret_id = aws_secretsmanager_secret.credentials[each.key].id
  secret_string = jsonencode({
    username = local.usernames[each.key]
    password = data.aws_secretsmanager_random_password.this[each.key].random_password
  })

  lifecycle {
    # Keep the first generated password: the data source yields a new one every plan.
    ignore_changes = [secret_string]
  }
}

resource "aws_secretsmanager_secret" "url" {
  for_each = local.password_stores

  #checkov:skip=CKV2_AWS_57: derived from the credentials secret and the store's endpoint; Terraform rewrites it whenever either changes, and there is nothing to rotate on its own.
  name                    = "${var.name_prefix}cafe/${each.key}/url"
  description             = "Connection URL of the ${each.key} read-model store, read by the workers as an ECS secret"
  kms_key_id              = var.secrets_kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "url" {
  for_each = local.password_stores

  secret_id     = aws_secretsmanager_secret.url[each.key].id
  secret_string = local.urls[each.key]
}

# ---------------------------------------------------------------------------------------
# Aurora PostgreSQL Serverless v2: the orders read model
# ---------------------------------------------------------------------------------------

resource "aws_db_subnet_group" "aurora" {
  name        = local.aurora_id
  description = "Private subnets of the orders cluster"
  subnet_ids  = var.subnet_ids
}

resource "aws_rds_cluster_parameter_group" "aurora" {
  name        = local.aurora_id
  family      = "aurora-postgresql${split(".", var.aurora_engine_version)[0]}"
  description = "TLS only; slow statements and DDL logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

resource "aws_cloudwatch_log_group" "aurora" {
  # Created here so the exported log gets a retention and the logs key; RDS would
  # otherwise create it unencrypted and kept forever.
  name              = "/aws/rds/cluster/${local.aurora_id}/postgresql"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_rds_cluster" "orders" {
  #checkov:skip=CKV2_AWS_8: protected by 7+ days of automated backups with point-in-time restore, deletion protection and a final snapshot; an AWS Backup plan (cross-account copies) is an organisation-level choice outside this stack.
  cluster_identifier              = local.aurora_id
  engine                          = "aurora-postgresql"
  engine_mode                     = "provisioned"
  engine_version                  = var.aurora_engine_version
  port                            = 5432
  database_name                   = var.orders_database
  master_username                 = local.usernames.postgres
  master_password                 = local.passwords.postgres
  db_subnet_group_name            = aws_db_subnet_group.aurora.name
  vpc_security_group_ids          = [var.security_group_ids["aurora"]]
  db_cluster_parameter_group_name = aws_rds_cluster_parameter_group.aurora.name

  storage_encrypted                   = true
  kms_key_id                          = var.stores_kms_key_arn
  iam_database_authentication_enabled = true
  deletion_protection                 = var.deletion_protection
  backup_retention_period             = var.backup_retention_days
  preferred_backup_window             = "03:00-04:00"
  copy_tags_to_snapshot               = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${local.aurora_id}-final"
  enabled_cloudwatch_logs_exports     = ["postgresql"]

  serverlessv2_scaling_configuration {
    min_capacity = var.aurora_min_acu
    max_capacity = var.aurora_max_acu
  }

  depends_on = [aws_cloudwatch_log_group.aurora]

  lifecycle {
    precondition {
      condition     = var.aurora_min_acu <= var.aurora_max_acu
      error_message = "aurora_min_acu must not exceed aurora_max_acu."
    }
  }
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name_prefix}cafe-rds-enhanced-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_rds_cluster_instance" "orders" {
  # The first is the writer; the others are readers in other AZs and failover targets.
  count = 1 + var.aurora_reader_count

  identifier                            = "${local.aurora_id}-${count.index}"
  cluster_identifier                    = aws_rds_cluster.orders.id
  engine                                = aws_rds_cluster.orders.engine
  engine_version                        = aws_rds_cluster.orders.engine_version
  instance_class                        = "db.serverless"
  db_subnet_group_name                  = aws_db_subnet_group.aurora.name
  publicly_accessible                   = false
  auto_minor_version_upgrade            = true
  copy_tags_to_snapshot                 = true
  promotion_tier                        = count.index
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.stores_kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn

  depends_on = [aws_iam_role_policy_attachment.rds_monitoring]
}

# ---------------------------------------------------------------------------------------
# DocumentDB: the documents read model
# ---------------------------------------------------------------------------------------

resource "aws_docdb_subnet_group" "documents" {
  name        = local.docdb_id
  description = "Private subnets of the documents cluster"
  subnet_ids  = var.subnet_ids
}

resource "aws_docdb_cluster_parameter_group" "documents" {
  name        = local.docdb_id
  family      = "docdb5.0"
  description = "TLS only; audit and profiler logs on"

  parameter {
    name  = "tls"
    value = "enabled"
  }

  parameter {
    name  = "audit_logs"
    value = "enabled"
  }

  parameter {
    name  = "profiler"
    value = "enabled"
  }

  parameter {
    name  = "profiler_threshold_ms"
    value = "500"
  }
}

resource "aws_cloudwatch_log_group" "docdb" {
  for_each = toset(["audit", "profiler"])

  name              = "/aws/docdb/${local.docdb_id}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_docdb_cluster" "documents" {
  cluster_identifier              = local.docdb_id
  engine                          = "docdb"
  engine_version                  = "5.0.0"
  port                            = 27017
  master_username                 = local.usernames.mongo
  master_password                 = local.passwords.mongo
  db_subnet_group_name            = aws_docdb_subnet_group.documents.name
  vpc_security_group_ids          = [var.security_group_ids["docdb"]]
  db_cluster_parameter_group_name = aws_docdb_cluster_parameter_group.documents.name

  storage_encrypted               = true
  kms_key_id                      = var.stores_kms_key_arn
  backup_retention_period         = var.backup_retention_days
  preferred_backup_window         = "03:00-04:00"
  deletion_protection             = var.deletion_protection
  skip_final_snapshot             = false
  final_snapshot_identifier       = "${local.docdb_id}-final"
  enabled_cloudwatch_logs_exports = ["audit", "profiler"]

  depends_on = [aws_cloudwatch_log_group.docdb]
}

resource "aws_docdb_cluster_instance" "documents" {
  count = var.docdb_instance_count

  identifier                      = "${local.docdb_id}-${count.index}"
  cluster_identifier              = aws_docdb_cluster.documents.id
  instance_class                  = var.docdb_instance_class
  auto_minor_version_upgrade      = true
  promotion_tier                  = count.index
  enable_performance_insights     = true
  performance_insights_kms_key_id = var.stores_kms_key_arn
}

# ---------------------------------------------------------------------------------------
# ElastiCache (Redis): the cache read model
# ---------------------------------------------------------------------------------------

resource "aws_elasticache_subnet_group" "cache" {
  name        = local.elasticache_id
  description = "Private subnets of the cache replication group"
  subnet_ids  = var.subnet_ids
}

resource "aws_elasticache_replication_group" "cache" {
  replication_group_id = local.elasticache_id
  description          = "CloudCafe cache read model"
  engine               = "redis"
  engine_version       = "7.1"
  parameter_group_name = "default.redis7"
  node_type            = var.elasticache_node_type
  port                 = 6379
  subnet_group_name    = aws_elasticache_subnet_group.cache.name
  security_group_ids   = [var.security_group_ids["elasticache"]]

  # A primary and a replica in another AZ, promoted automatically.
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true

  at_rest_encryption_enabled = true
  kms_key_id                 = var.stores_kms_key_arn
  transit_encryption_enabled = true
  auth_token                 = local.passwords.redis
  auth_token_update_strategy = "ROTATE"

  snapshot_retention_limit   = var.backup_retention_days
  snapshot_window            = "03:00-04:00"
  final_snapshot_identifier  = "${local.elasticache_id}-final"
  auto_minor_version_upgrade = true
}

# ---------------------------------------------------------------------------------------
# MemoryDB: the inventory read model (durable Redis)
# ---------------------------------------------------------------------------------------

resource "aws_memorydb_user" "inventory" {
  user_name     = local.usernames.memorydb
  access_string = "on ~* &* +@all"

  authentication_mode {
    type      = "password"
    passwords = [local.passwords.memorydb]
  }
}

resource "aws_memorydb_acl" "inventory" {
  name       = local.memorydb_id
  user_names = [aws_memorydb_user.inventory.user_name]
}

resource "aws_memorydb_subnet_group" "inventory" {
  name        = local.memorydb_id
  description = "Private subnets of the inventory cluster"
  subnet_ids  = var.subnet_ids
}

resource "aws_memorydb_cluster" "inventory" {
  name                       = local.memorydb_id
  description                = "CloudCafe inventory read model"
  engine                     = "redis"
  engine_version             = "7.1"
  parameter_group_name       = "default.memorydb-redis7"
  node_type                  = var.memorydb_node_type
  num_shards                 = var.memorydb_shards
  num_replicas_per_shard     = 1
  acl_name                   = aws_memorydb_acl.inventory.name
  subnet_group_name          = aws_memorydb_subnet_group.inventory.name
  security_group_ids         = [var.security_group_ids["memorydb"]]
  tls_enabled                = true
  kms_key_arn                = var.stores_kms_key_arn
  snapshot_retention_limit   = var.backup_retention_days
  snapshot_window            = "03:00-04:00"
  final_snapshot_name        = "${local.memorydb_id}-final"
  auto_minor_version_upgrade = true
}

# ---------------------------------------------------------------------------------------
# Redshift Serverless: the analytics warehouse, reached through the Data API
# ---------------------------------------------------------------------------------------

resource "aws_redshiftserverless_namespace" "analytics" {
  namespace_name = var.redshift_workgroup
  db_name        = var.analytics_database
  admin_username = "cafe_admin"
  # Redshift generates the password and keeps it in Secrets Manager; the Data API
  # callers authenticate with that secret, so Terraform never sees the password.
  manage_admin_password            = true
  admin_password_secret_kms_key_id = var.secrets_kms_key_arn
  kms_key_id                       = var.stores_kms_key_arn
  log_exports                      = ["userlog", "connectionlog"]
}

resource "aws_redshiftserverless_workgroup" "analytics" {
  workgroup_name       = var.redshift_workgroup
  namespace_name       = aws_redshiftserverless_namespace.analytics.namespace_name
  base_capacity        = var.redshift_base_rpu
  subnet_ids           = var.subnet_ids
  security_group_ids   = [var.security_group_ids["redshift"]]
  publicly_accessible  = false
  enhanced_vpc_routing = true
}
