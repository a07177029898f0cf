//! The log written to a file is plain text: the real binary, its stdout piped to a file,
//! logs start-up and requests without a single terminal colour code (ESC byte).

use crate::helpers::*;

#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let db = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("tally-log-test-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("tally.log");
    let file = std::fs::File::create(&path).unwrap();
    // Text format at info, so start-up and every request are logged; NO_COLOR empty counts
    // as unset, so only the terminal check can keep the colours out.
    let env = [("RUST_LOG", "info"), ("TALLY_LOG_FORMAT", "text"), ("NO_COLOR", "")];
    let mut tally = Process::start_logging_to(&db, &env, file.into()).await;
    let client = reqwest::Client::new();
    let ok = client.get(format!("{}/v1/tenants", tally.base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let refused = client.get(format!("{}/v1/tenants", tally.base)).bearer_auth("wrong-token").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // The request lines are written as the responses finish; give them a moment to land.
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&path).unwrap();
        if log.matches("/v1/tenants").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tally.kill();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!log.contains('\u{1b}'), "no ESC (colour code) in a log written to a file:\n{log:?}");
    assert!(log.contains("listening on"), "start-up is logged:\n{log}");
    assert!(log.contains("status=401"), "a refused request is logged:\n{log}");
    assert!(log.lines().any(|l| l.contains(" INFO ")), "levels are written as words:\n{log}");
}
