provider "aws" {
  region = local.region

  default_tags {
    tags = {
      Project     = "CloudCafe"
      Environment = var.environment
    }
  }
}
