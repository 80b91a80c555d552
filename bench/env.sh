# Sourced by the bench scripts after they set $here: where the shared harness
# is, and a random password for the `bench` user custos-reset.sh makes.
S=${BENCH_HARNESS:-$here/../../shared/bench}
export BENCH_PASSWORD=${BENCH_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
# The Study Instance UID of the study whose files are in folder $1.
study_uid() { /usr/bin/dcmdump +P StudyInstanceUID "$(find "$1" -type f -print -quit)" | sed -n 's/.*\[\(.*\)\].*/\1/p'; }
