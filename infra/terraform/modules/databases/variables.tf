variable "name_prefix" {
  description = "Prefix of every name."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets the stores live in."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security group by service (network module): aurora, docdb, elasticache, memorydb, redshift."
  type        = map(string)
}

variable "stores_kms_key_arn" {
  description = "Customer managed key of the stores' data, snapshots and Performance Insights."
  type        = string
}

variable "secrets_kms_key_arn" {
  description = "Customer managed key of the credentials and URL secrets."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "Customer managed key of the exported database log groups."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the exported database log groups."
  type        = number
}

variable "backup_retention_days" {
  description = "Automated backup / snapshot retention of every store."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 7 and 35."
  }
}

variable "orders_database" {
  description = "Database of the orders model (names.json `orders_database`)."
  type        = string
}

variable "documents_database" {
  description = "Database of the documents model (names.json `documents_database`)."
  type        = string
}

variable "analytics_database" {
  description = "Warehouse database (names.json `analytics_database`)."
  type        = string
}

variable "aurora_engine_version" {
  description = "Aurora PostgreSQL version; its major version picks the parameter group family."
  type        = string
  default     = "16.6"
}

variable "aurora_min_acu" {
  description = "Aurora Serverless v2 minimum ACU."
  type        = number
}

variable "aurora_max_acu" {
  description = "Aurora Serverless v2 maximum ACU."
  type        = number
}

variable "aurora_reader_count" {
  description = "Aurora readers besides the writer."
  type        = number
}

variable "docdb_instance_class" {
  description = "DocumentDB instance class."
  type        = string
}

variable "docdb_instance_count" {
  description = "DocumentDB instances."
  type        = number
}

variable "elasticache_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "memorydb_node_type" {
  description = "MemoryDB node type."
  type        = string
}

variable "memorydb_shards" {
  description = "MemoryDB shards (each a primary and one replica)."
  type        = number
}

variable "redshift_workgroup" {
  description = "Name of the Redshift Serverless namespace and workgroup."
  type        = string
}

variable "redshift_base_rpu" {
  description = "Redshift Serverless base capacity (RPU)."
  type        = number
}

variable "deletion_protection" {
  description = "Refuse to delete the tables, Aurora and DocumentDB. Set false and apply before `terraform destroy` (teardown)."
  type        = bool
  default     = true
}
