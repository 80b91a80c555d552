//! Never lose an acknowledged image: SIGKILL the server in the middle of a
//! concurrent ingest; after restart every instance acknowledged with success
//! is present and readable, and nothing half-written is visible.

use crate::common::*;

#[test]
fn sigkill_during_concurrent_ingest_loses_no_acknowledged_instance() {
    let data = DataDir::new("durability");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get");
    let server = Server::process(&data);
    let acked = data.path.with_extension("acked");
    let work = data.path.with_extension("work");
    let mut ingest = start_ingest(&server, &acked, &work, 40);
    server.kill9(); // mid-ingest: some stores are half-received
    ingest.wait().unwrap();

    let server = Server::start(&data);
    assert_eq!(
        staged_files(&data.path.join("blobs/.staging")).len(),
        0,
        "no staged bytes survive a restart"
    );
    let (lost, unreadable) = lost_after_restart(&server, &acked);
    assert!(
        lost.is_empty(),
        "{} acknowledged instances lost: {lost:?}",
        lost.len()
    );
    assert_eq!(unreadable, 0);
    let _ = std::fs::remove_dir_all(&work);
}
