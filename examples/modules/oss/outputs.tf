# Reference oss module — object storage (对象存储): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

output "ids" {
  description = "Bucket ids."
  value       = terraform_data.bucket[*].id
}

output "bucket" {
  description = "Name of the (first) bucket."
  value       = local.buckets[0]
}

output "buckets" {
  description = "Names of all buckets."
  value       = local.buckets
}

output "endpoint" {
  description = "Object storage endpoint of the region."
  value       = local.endpoint
}

output "tags" {
  description = "Tags put on every bucket."
  value       = var.tags
}
