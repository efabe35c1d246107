//! A console form's fields, or a page's query string: both are
//! `application/x-www-form-urlencoded`, where a field may come many times
//! (a checkbox list) or not at all (an unticked checkbox).

#[derive(Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// Bytes that are not UTF-8 become U+FFFD, for the field rules to refuse.
    pub fn parse(raw: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(raw).into_owned().collect())
    }

    /// The first value of a field.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
    }

    /// The first value of a field, when it is not empty: an empty filter is no filter.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.text(name).filter(|value| !value.is_empty())
    }

    /// Every value of a field, in order, without repeats.
    pub fn all(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        for (_, value) in self.0.iter().filter(|(field, _)| field == name) {
            if !values.contains(value) {
                values.push(value.clone());
            }
        }
        values
    }

    /// A checkbox: ticked when sent at all.
    pub fn checked(&self, name: &str) -> bool {
        self.text(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_repeated_missing_and_broken_fields() {
        let form = Form::parse(b"groups=a&groups=b&groups=a&name=Ada+L%C3%B6&empty=&bad=%FF&is_active=on");
        assert_eq!(form.all("groups"), ["a", "b"]);
        assert_eq!(form.text("name"), Some("Ada L\u{f6}"));
        assert_eq!((form.text("empty"), form.value("empty")), (Some(""), None));
        assert_eq!(form.text("bad"), Some("\u{fffd}"));
        assert!(form.checked("is_active") && !form.checked("is_staff"));
        assert_eq!(form.text("missing"), None);
    }
}
