//! Replays the DIMSE fuzz corpora (fuzz/corpus, kept in the repository,
//! grown by `scripts/fuzz`) on the stable toolchain.

#[test]
fn the_command_and_identifier_corpora_replay_without_panics() {
    assert!(replay("dimse_command", custos_dimse::fuzzing::command) > 0);
    assert!(replay("dimse_identifier", custos_dimse::fuzzing::identifier) > 0);
}

fn replay(target: &str, f: fn(&[u8])) -> usize {
    custos_archive::fuzzing::replay_corpus(target, f)
}
