# Reference ecs module — elastic compute (云服务器): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

output "ids" {
  description = "Instance ids."
  value       = terraform_data.instance[*].id
}

output "names" {
  description = "Instance names."
  value       = local.names
}

output "private_ips" {
  description = "Private IPv4 address of each instance."
  value       = local.private_ips
}

output "tags" {
  description = "Tags put on every instance."
  value       = var.tags
}

output "initial_password" {
  description = "Initial login password of the instances (generated; rotate it after the first login)."
  value       = substr(sha256(join(",", terraform_data.instance[*].id)), 0, 24)
  sensitive   = true
}
