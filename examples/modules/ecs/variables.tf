# Reference ecs module — elastic compute (云服务器): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

variable "name_prefix" {
  description = "Prefix of every resource name: <namespace>-<request>-<item>."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.name_prefix))
    error_message = "name_prefix must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit."
  }
}

variable "region" {
  description = "Region of the cloud provider, e.g. nanning-1."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.region)) > 0
    error_message = "region must not be empty."
  }
}

variable "tags" {
  description = "Tags put on every resource (yunzhang.io/department, yunzhang.io/request, ...)."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "instance_count" {
  description = "How many identical resources, 1 to 1000."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 1000 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number from 1 to 1000."
  }
}

variable "sku" {
  description = "The provider's SKU / instance class."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.sku)) > 0
    error_message = "sku must not be empty."
  }
}

variable "vcpu" {
  description = "vCPUs per instance, 1 to 512; null leaves it to the SKU."
  type        = number
  default     = null

  validation {
    # A conditional, because `||` does not short-circuit: `null >= 1` would be an error.
    condition     = var.vcpu == null ? true : (var.vcpu >= 1 && var.vcpu <= 512 && floor(var.vcpu) == var.vcpu)
    error_message = "vcpu must be a whole number from 1 to 512."
  }
}

variable "memory_gib" {
  description = "Memory per instance in GiB, 1 to 4096; null leaves it to the SKU."
  type        = number
  default     = null

  validation {
    # A conditional, because `||` does not short-circuit: `null >= 1` would be an error.
    condition     = var.memory_gib == null ? true : (var.memory_gib >= 1 && var.memory_gib <= 4096 && floor(var.memory_gib) == var.memory_gib)
    error_message = "memory_gib must be a whole number from 1 to 4096."
  }
}

variable "storage_gib" {
  description = "System and data disk per instance in GiB, 1 to 65536; null leaves it to the SKU."
  type        = number
  default     = null

  validation {
    # A conditional, because `||` does not short-circuit: `null >= 1` would be an error.
    condition     = var.storage_gib == null ? true : (var.storage_gib >= 1 && var.storage_gib <= 65536 && floor(var.storage_gib) == var.storage_gib)
    error_message = "storage_gib must be a whole number from 1 to 65536."
  }
}
