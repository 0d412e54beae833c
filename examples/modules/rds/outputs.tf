# Reference rds module — managed database (云数据库): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

output "ids" {
  description = "Database instance ids."
  value       = terraform_data.instance[*].id
}

output "endpoint" {
  description = "Connection endpoint (host:port) of the database service."
  value       = local.endpoint
}

output "endpoints" {
  description = "Connection endpoint (host:port) of each instance."
  value       = local.endpoints
}

output "port" {
  description = "Database port."
  value       = local.port
}

output "tags" {
  description = "Tags put on every instance."
  value       = var.tags
}

output "admin_password" {
  description = "Initial administrator password of the database (generated; rotate it after the first login)."
  value       = substr(sha256(join(",", terraform_data.instance[*].id)), 0, 24)
  sensitive   = true
}
