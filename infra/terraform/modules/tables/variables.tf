variable "names" {
  description = "Table name by names.json key: events_table, leases_table, parked_table, active_orders_table, idempotency_table, replays_table."
  type        = map(string)

  validation {
    condition = length(setsubtract(
      ["events_table", "leases_table", "parked_table", "active_orders_table", "idempotency_table", "replays_table"],
      keys(var.names),
    )) == 0
    error_message = "names must name every pipeline table."
  }
}

variable "kms_key_arn" {
  description = "Customer managed key of the tables."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the tables, Aurora and DocumentDB. Set false and apply before `terraform destroy` (teardown)."
  type        = bool
  default     = true
}
