# Reference oss module — object storage (对象存储): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

locals {
  buckets  = [for i in range(var.instance_count) : "${var.name_prefix}-${i}"]
  endpoint = "https://oss-${var.region}.internal"
}

# One per bucket; `input` carries the spec, so a change of capacity shows in the plan.
resource "terraform_data" "bucket" {
  count = var.instance_count

  input = {
    bucket             = local.buckets[count.index]
    sku                = var.sku
    object_storage_gib = var.object_storage_gib
    region             = var.region
    tags               = var.tags
  }
}
