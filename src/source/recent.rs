//! What a source remembers of what it saw lately, bounded: the Matrix events it captured (a repeat is
//! skipped without a lookup on disk) and who sent each (an edit or a redaction names its target by
//! event ID only); the SQS messages it refused (each is reported once, however often it returns).

use std::collections::{HashMap, VecDeque};

/// The last `capacity` keys inserted, each with a value; the oldest is forgotten first.
#[derive(Debug)]
pub(crate) struct Recent<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<V> Recent<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Remembers `key` (an empty one is no event: never remembered).
    pub fn insert(&mut self, key: String, value: V) {
        if key.is_empty() {
            return;
        }
        if self.map.insert(key.clone(), value).is_some() {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.map.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest() {
        let mut recent = Recent::new(3);
        for i in 0..=3 {
            recent.insert(format!("${i}"), i);
        }
        recent.insert("$3".into(), 30);
        recent.insert(String::new(), 99);
        assert!(!recent.contains("$0"));
        assert!(!recent.contains(""));
        assert_eq!(recent.get("$1"), Some(&1));
        assert_eq!(recent.get("$3"), Some(&30));
    }
}
