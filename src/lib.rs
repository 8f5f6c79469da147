//! pgplan: declarative plan/apply for PostgreSQL on Kubernetes and AWS RDS.
