# Reference eip module — elastic public IP (弹性公网IP): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

output "ids" {
  description = "Elastic IP ids."
  value       = terraform_data.address[*].id
}

output "addresses" {
  description = "The public IPv4 addresses."
  value       = local.addresses
}

output "tags" {
  description = "Tags put on every address."
  value       = var.tags
}
