use super::*;

use crate::policy::PolicyDef;

fn scanner(detectors: &[&str], keywords: &[&str]) -> StreamScanner {
    let set = PolicySet::compile(&[PolicyDef {
        name: Some("block".into()),
        detectors: detectors.iter().map(|d| (*d).to_owned()).collect(),
        keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
        action: Some("block".into()),
        direction: Some("response".into()),
        ..Default::default()
    }])
    .unwrap();
    StreamScanner::new(Arc::new(set), Direction::Response)
}

/// Text held after each delta: bytes from the hold point to the end.
fn held_after(s: &mut StreamScanner, delta: &str) -> u64 {
    assert!(s.feed(delta).is_none(), "{delta:?} tripped");
    s.fed() - s.hold_from()
}

#[test]
fn ordinary_prose_is_never_held() {
    let mut s = scanner(
        &["credit_card", "email", "openai_key", "aws_secret_key"],
        &[],
    );
    for token in [
        "Sure", ",", " the", " quick", " brown", " fox", ".", " Hello", " HashMap", " world!",
        "\n\n", " end.",
    ] {
        assert_eq!(held_after(&mut s, token), 0, "{token:?}");
    }
}

#[test]
fn card_digits_are_held_from_their_first_digit_until_confirmed() {
    let mut s = scanner(&["credit_card"], &[]);
    assert_eq!(held_after(&mut s, "Your card: "), 0);
    assert_eq!(held_after(&mut s, "5555 55"), 7);
    assert_eq!(held_after(&mut s, "55 55"), 12);
    assert_eq!(held_after(&mut s, "55 4444"), 19);
    assert!(s.feed(". ").is_some());
}

#[test]
fn a_number_is_released_once_it_cannot_become_a_card() {
    let mut s = scanner(&["credit_card"], &[]);
    assert_eq!(held_after(&mut s, "in 2024"), 4);
    assert_eq!(held_after(&mut s, ", then"), 0);
}

#[test]
fn a_key_prefix_is_held_but_a_bare_word_is_not() {
    let mut s = scanner(&["openai_key"], &[]);
    assert_eq!(held_after(&mut s, "key: sk"), 0);
    assert_eq!(held_after(&mut s, "-pro"), 6);
    assert_eq!(held_after(&mut s, "blem"), 10);
    assert_eq!(held_after(&mut s, " solved"), 0);
}

#[test]
fn a_complete_keyword_waits_for_the_bytes_that_confirm_it() {
    let mut s = scanner(&[], &["bluebird"]);
    // A strict prefix of the keyword is an ordinary word and may go.
    assert_eq!(held_after(&mut s, "codename blueb"), 0);
    assert_eq!(held_after(&mut s, "ird"), 8);
    assert!(s.feed(". ").is_some());
}

#[test]
fn what_is_held_stays_within_the_window() {
    let mut s = scanner(&["credit_card", "email"], &[]);
    for _ in 0..2_000 {
        s.feed("12-34-");
        assert!(s.fed() - s.hold_from() <= MAX_WINDOW as u64);
    }
}

#[test]
fn the_end_releases_everything() {
    let mut s = scanner(&["credit_card"], &[]);
    s.feed("call 555 01");
    assert!(s.hold_from() < s.fed());
    assert!(s.finish().is_none());
    assert_eq!(s.hold_from(), s.fed());
}

#[test]
fn a_number_that_words_after_it_may_name_an_ssn_waits_for_them() {
    let mut s = scanner(&["us_ssn"], &[]);
    assert_eq!(held_after(&mut s, "applicant 219099999"), 9);
    // Not yet ruled out: the words that name it may still come.
    assert_eq!(held_after(&mut s, " ("), 11);
    assert!(
        s.feed("SSN) on file").is_some(),
        "confirmed by the words after"
    );

    // Followed by enough other text, it is released.
    let mut s = scanner(&["us_ssn"], &[]);
    assert_eq!(held_after(&mut s, "order 219099999"), 9);
    let filler = " shipped to the warehouse on the east side of town, on time, as promised.";
    assert_eq!(held_after(&mut s, filler), 0);
}
