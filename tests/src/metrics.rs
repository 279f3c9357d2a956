//! Scrapes a `/metrics` endpoint and reads series out of the Prometheus/OpenMetrics text
//! format: just enough parsing for tests (`name{label="value",...} number`).

use std::collections::BTreeMap;

/// One scrape: every sample line, parsed.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// GETs `url` (e.g. `http://127.0.0.1:9100/metrics`) and parses it.
    pub async fn get(url: &str) -> Result<Self, String> {
        let resp = reqwest::get(url)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: {}", resp.status()));
        }
        let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    /// The value of the series `name` whose labels include all of `labels`; `None` when
    /// there is no such series. Several matches are summed.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// [`Scrape::value`], counting a counter that was never touched as 0.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

fn parse_line(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.trim().parse::<f64>().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = BTreeMap::new();
            // Label values here are server-controlled (tier, worker id, outcome): no
            // commas or escaped quotes inside them.
            for pair in body.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=')?;
                labels.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
            }
            (name.to_owned(), labels)
        }
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_by_name_and_labels() {
        let s = Scrape::parse(
            "# TYPE x counter\nx_total{tier=\"small\",outcome=\"ok\"} 3\nx_total{tier=\"large\",outcome=\"ok\"} 1\ny 2.5\n# EOF\n",
        );
        assert_eq!(s.value("x_total", &[("tier", "small")]), Some(3.0));
        assert_eq!(s.value("x_total", &[("outcome", "ok")]), Some(4.0));
        assert_eq!(s.value("y", &[]), Some(2.5));
        assert_eq!(s.value("z", &[]), None);
        assert_eq!(s.counter("z", &[]), 0.0);
    }
}
