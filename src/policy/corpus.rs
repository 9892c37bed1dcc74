//! A labeled corpus for measuring the detectors, generated from fixed
//! seeds: for every entity type, positives and hard negatives (look-alikes
//! that must not match), each placed in prose or in the text real traffic
//! carries (log lines, JSON logs, stack traces, CSV rows, Markdown tables,
//! env files, YAML, curl commands, Python and JS snippets). Positives come
//! in the forms seen in that traffic (an SSN without dashes beside `SSN:`,
//! a card with dots, a JWT after `Bearer `); negatives include the
//! look-alikes that context tells apart (nine-digit order ids, four-part
//! versions) and the placeholders of docs and config templates. The tests
//! embed the same samples in JSON request bodies and split them across
//! stream chunks.

/// A tiny deterministic PRNG (SplitMix64): the corpus must be the same on
/// every run and machine.
pub(crate) struct Rng(u64);

/// One sample: `text` with the planted value at `span`, labeled with its
/// entity type, or a hard negative (`label` is `None`) made to look like
/// `of`.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub text: String,
    pub span: std::ops::Range<usize>,
    pub label: Option<&'static str>,
    pub of: &'static str,
}

/// Sentences without digits, keys or secret words to put values in.
const PROSE: &[&str] = &[
    "Hi team, please update the record for {} before the end of the day.",
    "The customer wrote: my details are {} so can you check them?",
    "Note {} (as discussed in the meeting).",
    "{}",
    "Summarise this message for me: \"Reach me via {} if anything changes.\"",
    "Können Sie das prüfen? Wert: {} — merci beaucoup, à bientôt.",
    "log line: user={} status=ok",
    "Translate to French:\n\n{}\n\nThanks!",
];

/// Text as logs, data and code carry it, with no entity of its own: the
/// value goes where `{}` is.
const CARRIERS: &[&str] = &[
    "2024-03-18T10:42:07.123Z INFO checkout handled request {} latency_ms=42",
    "{\"level\":\"info\",\"ts\":\"2024-03-18T10:42:07Z\",\"msg\":\"{}\",\"service\":\"checkout\"}",
    "Traceback (most recent call last):\n  File \"app/billing.py\", line 42, in charge\n    raise ValueError(\"rejected: {}\")\nValueError: rejected",
    "java.lang.IllegalStateException: rejected {}\n\tat com.example.billing.Charge.run(Charge.java:118)\n\tat java.base/java.lang.Thread.run(Thread.java:833)",
    "name,team,note\nAnna Smith,billing,{}\nRaj Kumar,support,none\n",
    "| field | value |\n|---|---|\n| note | {} |\n| team | billing |\n",
    "# service settings\nAPP_ENV=production\nNOTE={}\nLOG_LEVEL=info\n",
    "service:\n  name: checkout\n  replicas: 3\n  note: {}\n",
    "curl -s https://api.example.com/v1/notes -H 'Content-Type: application/json' -d '{\"note\": \"{}\"}'",
    "def handler(event):\n    note = \"{}\"\n    return {\"ok\": True, \"note\": note}\n",
    "const note = `{}`;\nconsole.log(\"saved\", note.length);\n",
    "> Quoting the customer's message: {}\n\nCan you draft a reply?",
];

// === impl Rng ===

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }

    pub fn chars(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| char::from(a[self.below(a.len())])).collect()
    }

    pub fn digits(&mut self, n: usize) -> String {
        self.chars(DIGITS, n)
    }
}

const DIGITS: &str = "0123456789";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &str = "0123456789abcdef";

/// Every entity type the corpus covers.
pub(crate) const TYPES: &[&str] = &[
    "credit_card",
    "us_ssn",
    "iban",
    "email",
    "phone",
    "ip_address",
    "openai_key",
    "anthropic_key",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "google_api_key",
    "slack_token",
    "stripe_key",
    "jwt",
    "private_key",
    "bearer_token",
];

/// `per_type` positives and as many hard negatives for every type.
pub(crate) fn generate(seed: u64, per_type: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for &ty in TYPES {
        for i in 0..per_type * 2 {
            let positive = i % 2 == 0;
            let (before, value, after) = if positive {
                positive_value(&mut rng, ty)
            } else {
                negative_value(&mut rng, ty)
            };
            let template = if rng.below(2) == 0 {
                *rng.pick(PROSE)
            } else {
                *rng.pick(CARRIERS)
            };
            let (head, tail) = template.split_once("{}").unwrap_or((template, ""));
            let start = head.len() + before.len();
            let text = format!("{head}{before}{value}{after}{tail}");
            out.push(Sample {
                span: start..start + value.len(),
                text,
                label: positive.then_some(ty),
                of: ty,
            });
        }
    }
    out
}

fn plain(value: String) -> (String, String, String) {
    (String::new(), value, String::new())
}

/// `value` with context before and after it.
fn around(before: &str, value: String, after: &str) -> (String, String, String) {
    (before.to_owned(), value, after.to_owned())
}

/// `value` in a table of its own lines, in the column `header` names:
/// CSV, TSV or Markdown.
fn in_table(rng: &mut Rng, header: &str, value: String) -> (String, String, String) {
    match rng.below(3) {
        0 => around(
            &format!("\nname,{header},status\nAnna Smith,"),
            value,
            ",ok\n",
        ),
        1 => around(&format!("\nname\t{header}\nAnna Smith\t"), value, "\n"),
        _ => around(
            &format!("\n| name | {header} | status |\n|---|---|---|\n| Anna Smith | "),
            value,
            " | ok |\n",
        ),
    }
}

fn luhn_digit(partial: &[u8]) -> u8 {
    // The check digit makes the sum over partial + digit divisible by 10.
    for d in 0..10 {
        let mut all = partial.to_vec();
        all.push(d);
        if super::builtin::credit_card_luhn(&all) {
            return d;
        }
    }
    0
}

fn card_digits(rng: &mut Rng) -> Vec<u8> {
    let (prefix, len) = *rng.pick(&[
        ("4", 16),
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("65", 16),
        ("3530", 16),
        ("36", 14),
        ("62", 16),
        ("4", 19),
    ]);
    let mut d: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while d.len() < len - 1 {
        d.push(rng.below(10) as u8);
    }
    let check = luhn_digit(&d);
    d.push(check);
    d
}

fn format_card(rng: &mut Rng, d: &[u8]) -> String {
    let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
    let sep = *rng.pick(&["", " ", "-", ".", "mixed"]);
    if sep.is_empty() {
        return s;
    }
    let groups: &[usize] = match d.len() {
        15 => &[4, 6, 5],
        14 => &[4, 6, 4],
        19 => &[4, 4, 4, 4, 3],
        _ => &[4, 4, 4, 4],
    };
    let mut out = String::new();
    let mut at = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str(if sep == "mixed" {
                rng.pick_str(&[" ", "-", "."])
            } else {
                sep
            });
        }
        out.push_str(&s[at..at + g]);
        at += g;
    }
    out
}

fn iban_check(country: &str, bban: &str) -> u32 {
    let moved = format!("{bban}{country}00");
    let mut rem = 0u32;
    for c in moved.bytes() {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    98 - rem
}

fn iban_parts(rng: &mut Rng) -> (String, String) {
    let (cc, bban) = match rng.below(6) {
        0 => ("DE", rng.digits(18)),
        1 => ("GB", format!("{}{}", rng.chars(UPPER, 4), rng.digits(14))),
        2 => ("FR", rng.digits(23)),
        3 => ("NL", format!("{}{}", rng.chars(UPPER, 4), rng.digits(10))),
        4 => ("ES", rng.digits(20)),
        _ => ("IT", format!("{}{}", rng.chars(UPPER, 1), rng.digits(22))),
    };
    (cc.to_owned(), bban)
}

fn format_iban(rng: &mut Rng, compact: &str) -> String {
    if rng.below(2) == 0 {
        return compact.to_owned();
    }
    compact
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn b64url(bytes: &[u8]) -> String {
    let a = B64URL.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(a[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn first_last(rng: &mut Rng) -> (String, String) {
    let first = *rng.pick(&[
        "anna", "raj", "li", "maria", "john", "fatima", "oliver", "chloé",
    ]);
    let first = if first.is_ascii() {
        (*first).to_owned()
    } else {
        "chloe".to_owned()
    };
    let last = *rng.pick(&[
        "smith", "kumar", "wang", "garcia", "mueller", "dupont", "okafor",
    ]);
    (first, (*last).to_owned())
}

fn phone(rng: &mut Rng) -> String {
    let sep = *rng.pick(&[" ", "-", "."]);
    let nxx = |rng: &mut Rng| format!("{}{}", rng.range(2, 9), rng.digits(2));
    match rng.below(12) {
        0 => format!("+1 {} {} {}", nxx(rng), nxx(rng), rng.digits(4)),
        1 => format!("({}) {}-{}", nxx(rng), nxx(rng), rng.digits(4)),
        2 => format!("{}{sep}{}{sep}{}", nxx(rng), nxx(rng), rng.digits(4)),
        3 => format!("+1{}{}{}", nxx(rng), nxx(rng), rng.digits(4)),
        4 => format!("+44 20 {} {}", rng.digits(4), rng.digits(4)),
        5 => format!("07{} {}", rng.digits(3), rng.digits(6)),
        6 => format!("020 {} {}", rng.digits(4), rng.digits(4)),
        7 => format!("+49 30 {}", rng.digits(8)),
        8 => format!("0{} {}", rng.range(151, 179), rng.digits(8)),
        9 => {
            let g = |rng: &mut Rng| rng.digits(2);
            format!(
                "0{}{sep}{}{sep}{}{sep}{}{sep}{}",
                rng.range(1, 9),
                g(rng),
                g(rng),
                g(rng),
                g(rng)
            )
        }
        10 => format!(
            "+33 {} {} {} {} {}",
            rng.range(1, 9),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2)
        ),
        _ => {
            let lead = rng.range(6, 9);
            let prefix = *rng.pick(&["+91 ", "+91-", "", "0"]);
            format!("{prefix}{lead}{} {}", rng.digits(4), rng.digits(5))
        }
    }
}

fn ssn_parts(rng: &mut Rng) -> (u32, u32, u32) {
    let area = loop {
        let a = rng.range(1, 899) as u32;
        if a != 666 {
            break a;
        }
    };
    (area, rng.range(1, 99) as u32, rng.range(1, 9999) as u32)
}

fn ipv6(rng: &mut Rng) -> String {
    let mut groups: Vec<String> = (0..8)
        .map(|_| {
            let n = rng.range(1, 4);
            let g = rng.chars(HEX, n);
            g.trim_start_matches('0').to_owned()
        })
        .map(|g| if g.is_empty() { "0".to_owned() } else { g })
        .collect();
    groups[0] = format!("2{}", rng.chars(HEX, 3));
    if rng.below(2) == 0 {
        // Compress a run of groups into `::`.
        let keep_head = rng.range(1, 3);
        let keep_tail = rng.range(1, 3);
        let head = groups[..keep_head].join(":");
        let tail = groups[8 - keep_tail..].join(":");
        return format!("{head}::{tail}");
    }
    groups.join(":")
}

fn pem_body(rng: &mut Rng) -> String {
    (0..rng.range(3, 8))
        .map(|_| rng.chars(B64, 64))
        .collect::<Vec<_>>()
        .join("\n")
}

fn positive_value(rng: &mut Rng, ty: &str) -> (String, String, String) {
    if rng.below(2) == 0 {
        if let Some(sample) = positive_in_context(rng, ty) {
            return sample;
        }
    }
    match ty {
        "credit_card" => {
            let d = card_digits(rng);
            plain(format_card(rng, &d))
        }
        "us_ssn" => {
            let (a, g, s) = ssn_parts(rng);
            let sep = *rng.pick(&["-", " "]);
            plain(format!("{a:03}{sep}{g:02}{sep}{s:04}"))
        }
        "iban" => {
            let (cc, bban) = iban_parts(rng);
            let check = iban_check(&cc, &bban);
            plain(format_iban(rng, &format!("{cc}{check:02}{bban}")))
        }
        "email" => {
            let (f, l) = first_last(rng);
            let local = match rng.below(4) {
                0 => format!("{f}.{l}"),
                1 => format!("{f}_{l}{}", rng.digits(2)),
                2 => format!("{f}+{}", rng.chars(LOWER, 5)),
                _ => f.clone(),
            };
            let domain = *rng.pick(&[
                "example.com",
                "mail.example.co.uk",
                "corp-mail.de",
                "uni.edu",
                "startup.io",
            ]);
            plain(format!("{local}@{domain}"))
        }
        "phone" => plain(phone(rng)),
        "ip_address" => plain(if rng.below(2) == 0 {
            format!(
                "{}.{}.{}.{}",
                rng.range(1, 255),
                rng.below(256),
                rng.below(256),
                rng.range(1, 254)
            )
        } else {
            ipv6(rng)
        }),
        "openai_key" => plain(match rng.below(3) {
            0 => format!("sk-proj-{}", rng.chars(ALNUM, 48)),
            1 => format!("sk-{}", rng.chars(ALNUM, 48)),
            _ => format!("sk-svcacct-{}", rng.chars(ALNUM, 40)),
        }),
        "anthropic_key" => plain(format!("sk-ant-api03-{}AA", rng.chars(B64URL, 93))),
        "aws_access_key" => plain(format!(
            "{}{}",
            *rng.pick(&["AKIA", "ASIA"]),
            rng.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        )),
        "aws_secret_key" => {
            let key = loop {
                let k = rng.chars(B64, 40);
                let has = |f: fn(&u8) -> bool| k.as_bytes().iter().any(f);
                if has(u8::is_ascii_digit)
                    && has(u8::is_ascii_uppercase)
                    && has(u8::is_ascii_lowercase)
                {
                    break k;
                }
            };
            let before = (*rng.pick(&[
                "aws_secret_access_key = ",
                "AWS secret: ",
                "export AWS_SECRET_ACCESS_KEY=",
                "\"SecretAccessKey\": \"",
            ]))
            .to_owned();
            (before, key, String::new())
        }
        "github_token" => plain(match rng.below(3) {
            0 => format!("ghp_{}", rng.chars(ALNUM, 36)),
            1 => format!("gho_{}", rng.chars(ALNUM, 36)),
            _ => format!(
                "github_pat_{}_{}",
                rng.chars(ALNUM, 22),
                rng.chars(ALNUM, 59)
            ),
        }),
        "google_api_key" => plain(format!("AIza{}", rng.chars(B64URL, 35))),
        "slack_token" => plain(format!(
            "xox{}-{}-{}-{}",
            *rng.pick(&["b", "p", "a"]),
            rng.digits(12),
            rng.digits(13),
            rng.chars(ALNUM, 24)
        )),
        "stripe_key" => plain(format!(
            "{}_{}_{}",
            *rng.pick(&["sk", "rk"]),
            *rng.pick(&["live", "test"]),
            rng.chars(ALNUM, 24)
        )),
        "jwt" => {
            let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
            let payload = b64url(
                format!(r#"{{"sub":"{}","iat":{}}}"#, rng.digits(8), rng.digits(10)).as_bytes(),
            );
            plain(format!("{header}.{payload}.{}", rng.chars(B64URL, 43)))
        }
        "private_key" => {
            let kind = *rng.pick(&["RSA ", "EC ", "", "OPENSSH "]);
            plain(format!(
                "-----BEGIN {kind}PRIVATE KEY-----\n{}\n-----END {kind}PRIVATE KEY-----",
                pem_body(rng)
            ))
        }
        "bearer_token" => {
            let before = (*rng.pick(&["Authorization: Bearer ", "use header bearer ", "BEARER "]))
                .to_owned();
            (before, rng.chars(ALNUM, 32), String::new())
        }
        _ => plain(String::new()),
    }
}

/// A positive in the context real traffic gives it: the key that names
/// it in a log, an env file or JSON, a table column, a header.
fn positive_in_context(rng: &mut Rng, ty: &str) -> Option<(String, String, String)> {
    let value = |rng: &mut Rng| positive_value(rng, ty).1;
    Some(match ty {
        "credit_card" => {
            let d = card_digits(rng);
            let card = format_card(rng, &d);
            match rng.below(4) {
                0 => around("card_number=", card, " exp=12/27"),
                1 => around("{\"pan\": \"", card, "\", \"brand\": \"visa\"}"),
                2 => around("Pay with card ", card, ", please."),
                _ => in_table(rng, "card", card),
            }
        }
        "us_ssn" => {
            let (a, g, s) = ssn_parts(rng);
            let bare = format!("{a:03}{g:02}{s:04}");
            let spaced = format!("{a:03} {g:02} {s:04}");
            match rng.below(11) {
                0 => around(
                    rng.pick_str(&["SSN: ", "SSN ", "SSN#", "ssn: ", "SSN - "]),
                    bare,
                    "",
                ),
                1 => around("ssn=", bare, " verified=true"),
                2 => around("{\"applicant_ssn\": \"", bare, "\"}"),
                3 => around("My social security number is ", bare, "."),
                4 => around("social security number ", spaced, " on the form"),
                5 => around("Social Security No. ", format!("{a:03}.{g:02}.{s:04}"), ""),
                6 => around("", bare, " (SSN)"),
                7 => {
                    let header = *rng.pick(&["ssn", "SSN", "applicant_ssn"]);
                    in_table(rng, header, bare)
                }
                8 => around("applicant:\n  name: Anna\n  ssn: ", bare, "\n"),
                9 => around("{\"socialSecurityNumber\":", bare, ",\"verified\":true}"),
                _ => around("Employee SSN ", format!("{a:03}-{g:02} {s:04}"), ""),
            }
        }
        "iban" => {
            let v = value(rng);
            match rng.below(2) {
                0 => around("iban=", v, " bic=DEUTDEFF"),
                _ => in_table(rng, "iban", v),
            }
        }
        "email" => {
            let v = value(rng);
            match rng.below(3) {
                0 => around("{\"email\":\"", v, "\"}"),
                1 => around("From: Anna Smith <", v, ">"),
                _ => in_table(rng, "email", v),
            }
        }
        "phone" => {
            let v = value(rng);
            match rng.below(2) {
                0 => around("tel: ", v, ""),
                _ => in_table(rng, "phone", v),
            }
        }
        "ip_address" => {
            let v4 = format!(
                "{}.{}.{}.{}",
                rng.range(1, 223),
                rng.below(256),
                rng.below(256),
                rng.range(1, 254)
            );
            match rng.below(7) {
                0 => around("host=", v4, " port=5432"),
                1 => around("{\"client_ip\": \"", v4, "\"}"),
                2 => around("connecting to ", v4, ":5432"),
                3 => around("the server at ", v4, " (version 2) is down"),
                4 => around("X-Forwarded-For: ", v4, ""),
                5 => around("upgraded the gateway ", v4, " to firmware 9"),
                _ => in_table(rng, "ip", v4),
            }
        }
        "openai_key" => {
            let v = value(rng);
            match rng.below(4) {
                0 => around("OPENAI_API_KEY=", v, ""),
                1 => around("openai.api_key = \"", v, "\""),
                2 => around(
                    "curl https://api.openai.com/v1/models -H \"Authorization: Bearer ",
                    v,
                    "\"",
                ),
                _ => around("const client = new OpenAI({ apiKey: '", v, "' });"),
            }
        }
        "anthropic_key" => {
            let v = value(rng);
            around(
                rng.pick_str(&["ANTHROPIC_API_KEY=", "-H 'x-api-key: "]),
                v,
                "",
            )
        }
        "aws_access_key" => {
            let v = value(rng);
            around(
                rng.pick_str(&[
                    "aws_access_key_id = ",
                    "AWS_ACCESS_KEY_ID=",
                    "\"AccessKeyId\": \"",
                ]),
                v,
                "",
            )
        }
        "github_token" => {
            let v = value(rng);
            match rng.below(3) {
                0 => around("GITHUB_TOKEN=", v, ""),
                1 => around("-H \"Authorization: Bearer ", v, "\""),
                _ => around(
                    "git clone https://x-access-token:",
                    v,
                    "@github.com/acme/app.git",
                ),
            }
        }
        "google_api_key" => {
            let v = value(rng);
            match rng.below(2) {
                0 => around("GOOGLE_API_KEY=", v, ""),
                _ => around(
                    "https://maps.googleapis.com/maps/api/geocode/json?address=Berlin&key=",
                    v,
                    "",
                ),
            }
        }
        "slack_token" => {
            let v = value(rng);
            around(
                rng.pick_str(&["SLACK_BOT_TOKEN=", "Authorization: Bearer ", "token: "]),
                v,
                "",
            )
        }
        "stripe_key" => {
            let v = value(rng);
            around(
                rng.pick_str(&[
                    "STRIPE_SECRET_KEY=",
                    "Stripe.api_key = '",
                    "Authorization: Bearer ",
                ]),
                v,
                "",
            )
        }
        "jwt" => {
            let v = value(rng);
            match rng.below(3) {
                0 => around(
                    rng.pick_str(&["Authorization: Bearer ", "authorization: bearer "]),
                    v,
                    "",
                ),
                1 => around("{\"id_token\": \"", v, "\"}"),
                _ => around("Cookie: session=", v, "; Path=/"),
            }
        }
        "private_key" => {
            let kind = *rng.pick(&["RSA ", ""]);
            let body = pem_body(rng).replace('\n', "\\n");
            around(
                "{\"type\": \"service_account\", \"private_key\": \"",
                format!(
                    "-----BEGIN {kind}PRIVATE KEY-----\\n{body}\\n-----END {kind}PRIVATE KEY-----"
                ),
                "\\n\"}",
            )
        }
        "bearer_token" => {
            let token = match rng.below(2) {
                0 => rng.chars(ALNUM, 32),
                _ => format!("ya29.a0{}", rng.chars(B64URL, 100)),
            };
            around(
                rng.pick_str(&[
                    "curl -H 'Authorization: Bearer ",
                    "headers = {\"Authorization\": \"Bearer ",
                ]),
                token,
                "'",
            )
        }
        _ => return None,
    })
}

/// A negative that context, or being a template, tells apart.
fn negative_in_context(rng: &mut Rng, ty: &str) -> Option<(String, String, String)> {
    // One in four: the entity's own words with no entity beside them.
    if rng.below(4) == 0 {
        if let Some(near) = near_miss(rng, ty) {
            return Some(plain(near.to_owned()));
        }
    }
    Some(match ty {
        "credit_card" => match rng.below(4) {
            // A Luhn-valid card glued to more digits is a longer code.
            0 => {
                // A Visa number has 13, 16 or 19 digits, never 18.
                let mut d = vec![4];
                while d.len() < 15 {
                    d.push(rng.below(10) as u8);
                }
                let check = luhn_digit(&d);
                d.push(check);
                let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
                let dotted = s.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(".");
                around("ref ", format!("{dotted}.{}", rng.digits(2)), "")
            }
            1 => around("released on ", format!("20{}.{:02}.{:02}", rng.range(10, 30), rng.range(1, 12), rng.range(1, 28)), ""),
            2 => around("build ", format!("{}.{}.{}.{}", rng.below(20), rng.below(20), rng.range(1000, 9999), rng.range(1000, 9999)), ""),
            _ => {
                // Dotted order ids that fail Luhn.
                let mut d = card_digits(rng);
                d.truncate(16);
                let last = d.len() - 1;
                // Any digit but the check digit fails Luhn.
                let check = luhn_digit(&d[..last]);
                d[last] = (check + 1 + rng.below(9) as u8) % 10;
                let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
                let dotted = s.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(".");
                around("order_ref=", dotted, "")
            }
        },
        "us_ssn" => {
            let (a, g, s) = ssn_parts(rng);
            let bare = format!("{a:03}{g:02}{s:04}");
            match rng.below(10) {
                0 => around("order ", bare, " shipped"),
                1 => around("ticket #", bare, " was closed"),
                2 => around("{\"order_id\": ", bare, ", \"status\": \"paid\"}"),
                3 => around("SSN on file. Order ", bare, " shipped."),
                4 => around("phone ", format!("{a:03} {g:02} {s:04}"), ""),
                5 => around("zip ", format!("{}-{}", rng.digits(5), rng.digits(4)), ""),
                6 => in_table(rng, "order_id", bare),
                7 => plain(bare),
                8 => around("invoice INV-", bare, ""),
                _ => around("customer id ", bare, " (ssn verified)"),
            }
        }
        "ip_address" => {
            let quad = format!(
                "{}.{}.{}.{}",
                rng.below(20),
                rng.below(20),
                rng.below(100),
                rng.range(1, 255)
            );
            match rng.below(10) {
                0 => around(rng.pick_str(&["version ", "Version: ", "ver. "]), quad, ""),
                1 => around("firmware ", quad, " installed"),
                2 => around("build=", quad, ""),
                3 => around("v", quad, ""),
                4 => around("{\"version\": \"", quad, "\"}"),
                5 => around("{\"appVersion\":\"", quad, "\"}"),
                6 => around("sw_ver: ", quad, ""),
                7 => around("Release ", quad, " is out"),
                8 => around("upgraded firmware from 1.0.0.1 to ", quad, ""),
                _ => in_table(rng, "version", quad),
            }
        }
        "openai_key" => around(
            "OPENAI_API_KEY=",
            (*rng.pick(&[
                "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "sk-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "sk-...",
                "sk-…",
                "<your-api-key>",
                "$OPENAI_API_KEY",
                "${OPENAI_API_KEY}",
                "%OPENAI_API_KEY%",
                "sk-proj-****************************************",
            ]))
            .to_owned(),
            "",
        ),
        "anthropic_key" => around(
            "ANTHROPIC_API_KEY=",
            (*rng.pick(&["sk-ant-api03-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "sk-ant-...", "<ANTHROPIC_API_KEY>"])).to_owned(),
            "",
        ),
        "aws_access_key" => around(
            "aws_access_key_id = ",
            (*rng.pick(&["AKIAXXXXXXXXXXXXXXXX", "AKIAREDACTEDREDACTED", "ASIAXXXXXXXXXXXXXXXX", "${AWS_ACCESS_KEY_ID}"])).to_owned(),
            "",
        ),
        "aws_secret_key" => around(
            "aws_secret_access_key = ",
            (*rng.pick(&[
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYREDACTED00",
                "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "${AWS_SECRET_ACCESS_KEY}",
                "<your-secret-key>",
            ]))
            .to_owned(),
            "",
        ),
        "github_token" => around(
            "GITHUB_TOKEN=",
            (*rng.pick(&[
                "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "${GITHUB_TOKEN}",
                "ghp_...",
                "github_pat_XXXXXXXXXXXXXXXXXXXXXX_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            ]))
            .to_owned(),
            "",
        ),
        "google_api_key" => around(
            "GOOGLE_API_KEY=",
            (*rng.pick(&["AIzaXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "AIza...", "<your-google-api-key>"])).to_owned(),
            "",
        ),
        "slack_token" => around(
            rng.pick_str(&["SLACK_BOT_TOKEN=", "token: ", "Authorization: Bearer "]),
            (*rng.pick(&[
                "xoxb-your-bot-token-here",
                "xoxb-XXXXXXXXXXXX-XXXXXXXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX",
                "xoxp-your-user-token",
                "xoxb-xxxx",
                "xoxb-000000000000-0000000000000-xxxxxxxxxxxxxxxxxxxxxxxx",
                "<your-token>",
                "$SLACK_TOKEN",
                "${SLACK_BOT_TOKEN}",
                "xoxa-your-app-token-goes-here",
            ]))
            .to_owned(),
            "",
        ),
        "stripe_key" => around(
            "STRIPE_SECRET_KEY=",
            (*rng.pick(&["sk_live_xxxxxxxxxxxxxxxxxxxxxxxx", "sk_test_XXXXXXXXXXXXXXXXXXXXXXXX", "sk_live_...", "<stripe-secret-key>"])).to_owned(),
            "",
        ),
        "jwt" => around(
            "Authorization: Bearer ",
            (*rng.pick(&[
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.xxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxx",
                "<jwt>",
                "eyJ...",
                "$JWT",
            ]))
            .to_owned(),
            "",
        ),
        "private_key" => plain(
            (*rng.pick(&[
                "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
                "-----BEGIN RSA PRIVATE KEY-----\n<your key here>\n-----END RSA PRIVATE KEY-----",
                "-----BEGIN EC PRIVATE KEY-----\nXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\n-----END EC PRIVATE KEY-----",
            ]))
            .to_owned(),
        ),
        "bearer_token" => around(
            rng.pick_str(&["curl -H \"Authorization: Bearer ", "Authorization: Bearer ", "-H 'Authorization: Bearer "]),
            (*rng.pick(&[
                "$API_TOKEN",
                "${GITHUB_TOKEN}",
                "<your-token>",
                "<token>",
                "%TOKEN%",
                "sk-...",
                "sk-xxxxxxxx",
                "****************************",
                "your-access-token.here",
                "{{token}}",
                "YOUR_API_TOKEN",
            ]))
            .to_owned(),
            "",
        ),
        _ => return None,
    })
}

/// Text that names an entity type but holds none: masked values, ids and
/// the words of a form.
fn near_miss(rng: &mut Rng, ty: &str) -> Option<&'static str> {
    let options: &[&'static str] = match ty {
        "credit_card" => &[
            "card ending in 4444, expires 12/27",
            "Visa **** **** **** 4242 was charged",
            "card_number=XXXX-XXXX-XXXX-1111",
        ],
        "us_ssn" => &[
            "SSN: ***-**-6789",
            "ssn=XXX-XX-6789 (last four only)",
            "social security number: on file",
        ],
        "iban" => &[
            "IBAN: see the attached form",
            "iban=DEXX XXXX XXXX XXXX XXXX XX",
        ],
        "email" => &[
            "email: <your-email>",
            "\"email\": null",
            "mail us at support (at) corp",
        ],
        "phone" => &[
            "phone: ext. 4471",
            "tel: +1 (ask reception)",
            "call back after 17:30",
        ],
        "ip_address" => &["ip=unknown", "subnet 10.0.0 is reserved", "host: localhost"],
        "openai_key" => &[
            "OPENAI_API_KEY is not set",
            "apiKey: process.env.OPENAI_API_KEY",
        ],
        "anthropic_key" => &["x-api-key header missing", "ANTHROPIC_API_KEY=your-key"],
        "aws_access_key" => &["aws_access_key_id = ", "AccessKeyId: (rotated)"],
        "aws_secret_key" => &[
            "aws_secret_access_key = ***",
            "AWS secret: see vault path secret/aws/prod",
        ],
        "github_token" => &[
            "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
            "token: ghp_...",
        ],
        "google_api_key" => &["key=YOUR_API_KEY", "GOOGLE_API_KEY=<key>"],
        "slack_token" => &["SLACK_BOT_TOKEN=xoxb-...", "token: xoxb-your-token"],
        "stripe_key" => &[
            "Stripe.api_key = os.environ['STRIPE_SECRET_KEY']",
            "sk_live_...",
        ],
        "jwt" => &["Authorization: Bearer eyJ...", "id_token: <jwt>"],
        "private_key" => &[
            "private_key: /etc/ssl/private/server.key",
            "-----BEGIN PUBLIC KEY----- only",
        ],
        "bearer_token" => &[
            "Authorization: Bearer",
            "auth scheme: bearer token (see docs)",
        ],
        _ => return None,
    };
    Some(rng.pick_str(options))
}

fn negative_value(rng: &mut Rng, ty: &str) -> (String, String, String) {
    if rng.below(2) == 0 {
        if let Some(sample) = negative_in_context(rng, ty) {
            return sample;
        }
    }
    plain(match ty {
        "credit_card" => match rng.below(3) {
            // Order numbers: card-shaped, Luhn fails.
            0 | 1 => {
                let mut d = card_digits(rng);
                // A 19-digit number's first 16 may be a card followed by
                // more digits (a CVV); that is not a look-alike.
                d.truncate(16);
                let last = d.len() - 1;
                // Any digit but the check digit fails Luhn.
                let check = luhn_digit(&d[..last]);
                d[last] = (check + 1 + rng.below(9) as u8) % 10;
                format_card(rng, &d)
            }
            // Luhn-valid but no brand's prefix.
            _ => {
                let mut d: Vec<u8> = vec![9];
                while d.len() < 15 {
                    d.push(rng.below(10) as u8);
                }
                let c = luhn_digit(&d);
                d.push(c);
                d.iter().map(|x| char::from(b'0' + x)).collect()
            }
        },
        "us_ssn" => {
            let (a, g, s) = ssn_parts(rng);
            match rng.below(5) {
                0 => format!("000-{g:02}-{s:04}"),
                1 => format!("666-{g:02}-{s:04}"),
                2 => format!("{}-{g:02}-{s:04}", rng.range(900, 999)),
                3 => format!("{a:03}-00-{s:04}"),
                _ => format!("{a:03}-{g:02}-0000"),
            }
        }
        "iban" => {
            let (cc, bban) = iban_parts(rng);
            let good = iban_check(&cc, &bban);
            // Any other check digits in 02..=98 fail mod-97.
            let bad = 2 + (good - 2 + 1 + rng.below(95) as u32) % 97;
            format_iban(rng, &format!("{cc}{bad:02}{bban}"))
        }
        "email" => {
            let (f, l) = first_last(rng);
            match rng.below(5) {
                0 => format!("{f}@localhost"),
                1 => format!("@{f}{l}"),
                2 => format!("icon-{f}@2x.png"),
                3 => format!("{f} at example dot com"),
                _ => format!("{f}@{l}"),
            }
        }
        "phone" => match rng.below(8) {
            0 => format!(
                "20{}-{:02}-{:02}",
                rng.range(10, 30),
                rng.range(1, 12),
                rng.range(1, 28)
            ),
            1 => format!(
                "{:02}:{:02}:{:02}",
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            2 => format!("order {}", rng.digits(10)),
            3 => format!(
                "version {}.{}.{}",
                rng.below(20),
                rng.below(20),
                rng.below(100)
            ),
            4 => format!(
                "ISBN 978-{}-{}-{}-{}",
                rng.below(10),
                rng.digits(2),
                rng.digits(6),
                rng.below(10)
            ),
            5 => format!(
                "{:02}.{:02}.20{}",
                rng.range(1, 28),
                rng.range(1, 12),
                rng.range(10, 30)
            ),
            6 => format!("pages {}-{}", rng.range(100, 400), rng.range(401, 900)),
            _ => format!("{} {} {}", rng.range(1, 999), rng.digits(3), rng.digits(3)),
        },
        "ip_address" => match rng.below(5) {
            0 => format!(
                "{}.{}.{}.{}.{}",
                rng.below(10),
                rng.below(10),
                rng.below(10),
                rng.below(10),
                rng.below(10)
            ),
            1 => format!(
                "{}.{}.{}.{}",
                rng.range(256, 999),
                rng.below(256),
                rng.below(256),
                rng.below(256)
            ),
            2 => format!(
                "{:02}:{:02}:{:02}",
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            3 => (0..6)
                .map(|_| rng.chars("0123456789ABCDEF", 2))
                .collect::<Vec<_>>()
                .join(":"),
            _ => "std::collections::HashMap".to_owned(),
        },
        "openai_key" => match rng.below(3) {
            0 => "sk-learn-compatible-estimators-for-everything".to_owned(),
            1 => format!("sk-{}", rng.chars(ALNUM, 8)),
            _ => "sketch the risk-assessment framework".to_owned(),
        },
        "anthropic_key" => format!("sk-ant-{}", rng.chars(ALNUM, 10)),
        "aws_access_key" => match rng.below(3) {
            0 => format!("AKIA{}", rng.chars(UPPER, 10)),
            1 => format!("X{}{}", *rng.pick(&["AKIA", "ASIA"]), rng.chars(UPPER, 16)),
            _ => "AKIA is a prefix; so is ASIA.".to_owned(),
        },
        "aws_secret_key" => match rng.below(3) {
            // Commit hashes near a context word: no capitals.
            0 => format!("aws commit {}", rng.chars(HEX, 40)),
            // The right shape, no context.
            1 => format!("checksum {}", rng.chars(ALNUM, 40)),
            // Context, but part of a longer base64 run.
            _ => format!("aws blob {}", rng.chars(B64, 60)),
        },
        "github_token" => format!("ghp_{}", rng.chars(ALNUM, 12)),
        "google_api_key" => format!("AIza{}", rng.chars(ALNUM, 20)),
        "slack_token" => format!("xoxb-{}", rng.chars(ALNUM, 5)),
        "stripe_key" => format!("pk_live_{}", rng.chars(ALNUM, 24)),
        "jwt" => {
            let header = b64url(br#"{"typ":"JWT"}"#);
            format!(
                "{header}.{}.{}",
                rng.chars(B64URL, 20),
                rng.chars(B64URL, 20)
            )
        }
        "private_key" => format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
            pem_body(rng)
        ),
        "bearer_token" => (*rng.pick(&[
            "The bearer of bad news arrived.",
            "Bearer well-established",
            "Bearer tokens are described in the spec.",
        ]))
        .to_owned(),
        _ => String::new(),
    })
}
