//! Clients of `--history --history-ids` channels, shared by
//! tests/history.rs and tests/redis_history.rs.

use super::{connect, next_text, send_text};

/// The epoch of an `epoch<TAB>E` (or `reset<TAB>E`) notice, after
/// checking it is the `word` one.
pub fn notice(text: &str, word: &str) -> String {
    let (got, epoch) = text.split_once('\t').expect("a notice");
    assert_eq!(got, word, "{text}");
    epoch.to_owned()
}

/// `SEQ<TAB>BODY`, split.
pub fn split_seq(text: &str) -> (u64, String) {
    let (seq, body) = text.split_once('\t').expect("SEQ<TAB>");
    (seq.parse().expect("a seq"), body.to_owned())
}

/// `m1`, `m2`... for the numbers of `range`.
pub fn bodies(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Publishes `texts` from a `--pubsub` client of `url`, each after the
/// one before came back numbered (the sender is a member: it gets its
/// own).
pub async fn publish_all(url: &str, texts: &[String]) {
    let mut publisher = connect(url).await;
    notice(&next_text(&mut publisher).await, "epoch");
    for text in texts {
        send_text(&mut publisher, text).await;
        loop {
            let got = next_text(&mut publisher).await;
            if got.ends_with(&format!("\t{text}")) {
                break;
            }
        }
    }
    let _ = publisher.close(None).await;
}

/// Asserts that `seen` is 1 to `total`, each once, in order; a failure
/// names the first difference, not the whole list.
pub fn assert_each_once_in_order(seen: &[u64], total: u32) {
    let wrong = (1..=u64::from(total))
        .zip(seen)
        .find(|(want, got)| want != *got);
    assert_eq!(wrong, None, "(expected, got) at the first difference");
    assert_eq!(seen.len(), total as usize);
}
