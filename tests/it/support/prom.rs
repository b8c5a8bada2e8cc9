//! Reading what a `--metrics` endpoint serves: the Prometheus text
//! exposition format (version 0.0.4) parsed into samples, so that tests
//! assert on numbers. Strict about what stratum's exporter writes: every
//! sample line is `NAME{LABEL="VALUE",…} NUMBER` or `NAME NUMBER`, and every
//! sample's family has a `# TYPE` line before it.

use std::collections::{BTreeMap, HashMap};

/// One scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    /// `# TYPE` of each family.
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    /// Parses `text`, panicking with the offending line on anything else.
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                s.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                    (name.to_string(), parse_labels(body, line))
                }
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| {
                    name.strip_suffix(suf)
                        .filter(|f| s.types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(&name)
                .to_string();
            assert!(
                s.types.contains_key(&family),
                "sample {line:?} has no # TYPE line before it"
            );
            s.samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        s
    }

    /// The value of the sample `name` whose labels are exactly `labels`
    /// (0 when there is none: a counter not incremented yet is not shown).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} twice: {found:?}");
        found.first().map_or(0.0, |s| s.value)
    }

    /// The sum over every sample called `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// The family's `# TYPE`.
    pub fn kind(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

/// GETs `http://ADDR/metrics` and parses it.
pub fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let resp = super::services::http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET http://{addr}/metrics");
    Scrape::parse(&resp.text().unwrap())
}

#[test]
fn parses_the_text_format() {
    let s = Scrape::parse(
        "# HELP a_total A\n# TYPE a_total counter\na_total{status=\"200\"} 3\na_total{status=\"404\",x=\"q\\\"\"} 1\n\n\
         # TYPE h histogram\nh_bucket{le=\"0.1\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.01\nh_count 2\n# TYPE g gauge\ng 7\n",
    );
    assert_eq!(s.value("a_total", &[("status", "200")]), 3.0);
    assert_eq!(s.value("a_total", &[("status", "404"), ("x", "q\"")]), 1.0);
    assert_eq!(s.value("a_total", &[("status", "500")]), 0.0);
    assert_eq!(s.sum("a_total"), 4.0);
    assert_eq!(s.value("h_count", &[]), 2.0);
    assert_eq!(s.value("g", &[]), 7.0);
    assert_eq!(s.kind("h"), Some("histogram"));
}
