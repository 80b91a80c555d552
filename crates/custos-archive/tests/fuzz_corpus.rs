//! Replays the `stored_file` fuzz corpus (fuzz/corpus, kept in the
//! repository, grown by `scripts/fuzz`) on the stable toolchain: every input
//! once through the ingest parse, the index record and the metadata JSON.

#[test]
fn the_stored_file_corpus_replays_without_panics() {
    let n = replay("stored_file", custos_archive::fuzzing::stored_file);
    assert!(n > 0, "the corpus is in the repository");
}

fn replay(target: &str, f: fn(&[u8])) -> usize {
    custos_archive::fuzzing::replay_corpus(target, f)
}
