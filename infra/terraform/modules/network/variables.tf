variable "name_prefix" {
  description = "Prefix of every name."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; the private subnets are its first /(n+4) blocks."
  type        = string
}

variable "az_count" {
  description = "Availability zones (2-3), one private subnet each."
  type        = number
}

variable "log_kms_key_arn" {
  description = "KMS key of the flow log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the flow log group."
  type        = number
}

variable "availability_zones" {
  description = "Zone names to choose from, in order (empty: the region's zones a to f)."
  type        = list(string)
  default     = []
}
