//! The RDS emulator: moto through aws-sdk-rds with an endpoint override, isolated accounts, and a
//! LocalPostgres standing behind an instance's (fake) endpoint.

use crate::support::{LocalPostgres, Moto, PgOptions};

#[tokio::test]
async fn an_encrypted_deletion_protected_instance_refuses_deletion() {
    let account = Moto::shared().account();
    let rds = account.rds_client();
    let created = rds
        .create_db_instance()
        .db_instance_identifier("backstage-prod")
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version("15.4")
        .allocated_storage(20)
        .master_username("backstage")
        .master_user_password("correct-horse-battery")
        .storage_encrypted(true)
        .deletion_protection(true)
        .send()
        .await
        .expect("CreateDBInstance");
    let instance = created.db_instance().unwrap();
    assert_eq!(instance.db_instance_identifier(), Some("backstage-prod"));
    let described = rds
        .describe_db_instances()
        .db_instance_identifier("backstage-prod")
        .send()
        .await
        .unwrap();
    let instance = &described.db_instances()[0];
    assert_eq!(instance.storage_encrypted(), Some(true));
    assert_eq!(instance.deletion_protection(), Some(true));
    assert_eq!(instance.engine(), Some("postgres"));
    assert!(instance
        .endpoint()
        .and_then(|e| e.address())
        .is_some_and(|a| a.ends_with(".rds.amazonaws.com")));

    let refused = rds
        .delete_db_instance()
        .db_instance_identifier("backstage-prod")
        .skip_final_snapshot(true)
        .send()
        .await
        .expect_err("deletion protection refuses the delete");
    let service = refused.into_service_error();
    assert_eq!(
        aws_sdk_rds::error::ProvideErrorMetadata::code(&service),
        Some("InvalidParameterCombination")
    );
    assert!(
        service.to_string().contains("deletion protection")
            || format!("{service:?}").contains("protected")
    );

    rds.modify_db_instance()
        .db_instance_identifier("backstage-prod")
        .deletion_protection(false)
        .apply_immediately(true)
        .send()
        .await
        .unwrap();
    rds.delete_db_instance()
        .db_instance_identifier("backstage-prod")
        .skip_final_snapshot(true)
        .send()
        .await
        .expect("deletable once unprotected");
}

#[tokio::test]
async fn accounts_are_isolated() {
    let moto = Moto::shared();
    let (a, b) = (moto.account(), moto.account());
    assert_ne!(a.account_id, b.account_id);
    a.rds_client()
        .create_db_instance()
        .db_instance_identifier("only-in-a")
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("u")
        .master_user_password("password123")
        .send()
        .await
        .unwrap();
    let seen_by_b = b.rds_client().describe_db_instances().send().await.unwrap();
    assert!(
        seen_by_b.db_instances().is_empty(),
        "account b sees nothing of a"
    );
    let seen_by_a = a.rds_client().describe_db_instances().send().await.unwrap();
    assert_eq!(seen_by_a.db_instances().len(), 1);
    let arn = seen_by_a.db_instances()[0].db_instance_arn().unwrap();
    assert!(arn.contains(&a.account_id), "{arn}");
    let env = a.env();
    assert!(env
        .iter()
        .any(|(k, v)| k == "AWS_ENDPOINT_URL" && v == moto.url()));
}

#[test]
fn a_local_postgres_stands_behind_the_instance() {
    let pg = LocalPostgres::start_with(PgOptions {
        superuser: "backstage".into(),
        password: "correct-horse-battery".into(),
        databases: vec!["backstage_plugin_catalog".into()],
        ..PgOptions::default()
    })
    .unwrap();
    let out = std::process::Command::new(crate::support::pg::bin("psql"))
        .args([
            "-h",
            &pg.host(),
            "-p",
            &pg.port().to_string(),
            "-U",
            "backstage",
            "-d",
            "backstage_plugin_catalog",
            "-Atc",
            "SELECT current_user",
        ])
        .env("PGPASSWORD", "correct-horse-battery")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "backstage",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.query("postgres", "SELECT 1, 'two'"),
        vec![vec!["1".to_string(), "two".to_string()]]
    );
}
