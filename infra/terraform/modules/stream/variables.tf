variable "name" {
  description = "Stream name (names.json `stream`, prefixed)."
  type        = string
}

variable "mode" {
  description = "ON_DEMAND or PROVISIONED."
  type        = string

  validation {
    condition     = contains(["ON_DEMAND", "PROVISIONED"], var.mode)
    error_message = "mode must be ON_DEMAND or PROVISIONED."
  }
}

variable "shard_count" {
  description = "Shards when PROVISIONED."
  type        = number
}

variable "retention_hours" {
  description = "Record retention in hours."
  type        = number
}

variable "kms_key_arn" {
  description = "Customer managed key of the stream."
  type        = string
}

variable "fan_out_consumers" {
  description = "Enhanced fan-out consumers to register (application names)."
  type        = list(string)
  default     = []
}
