variable "name_prefix" {
  description = "Prefix of the key aliases."
  type        = string
}
