# Reference rds module — managed database (云数据库): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

locals {
  names     = [for i in range(var.instance_count) : "${var.name_prefix}-${i}"]
  port      = 3306
  endpoint  = "${var.name_prefix}.rds.${var.region}.internal:${local.port}"
  endpoints = [for name in local.names : "${name}.rds.${var.region}.internal:${local.port}"]
}

# One per database instance; `input` carries the spec, so a change of size shows in the plan.
resource "terraform_data" "instance" {
  count = var.instance_count

  input = {
    name        = local.names[count.index]
    sku         = var.sku
    storage_gib = var.storage_gib
    region      = var.region
    endpoint    = local.endpoints[count.index]
    tags        = var.tags
  }
}
