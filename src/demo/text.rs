//! Demo layer: the canned content of the simulation — customer names, what customers ask
//! about, what agents answer and note down. Plain data.

use rand::Rng;
use rand::seq::SliceRandom;

const FIRST_NAMES: &[&str] = &[
    "Emma", "Liam", "Sofia", "Noah", "Mia", "Lucas", "Hannah", "Omar", "Elena", "Jonas", "Aisha",
    "Mateo", "Freya", "Ravi", "Clara", "Diego", "Ingrid", "Yusuf", "Lea", "Kenji", "Amara",
    "Felix", "Nora", "Samir",
];

const LAST_NAMES: &[&str] = &[
    "Berg", "Costa", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Khan", "Larsen", "Meyer",
    "Moreau", "Nowak", "Olsen", "Petrov", "Rossi", "Schmidt", "Silva", "Tanaka", "Weber", "Young",
];

/// A made-up customer.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub first: &'static str,
    pub last: &'static str,
}

impl Person {
    pub fn random(rng: &mut impl Rng) -> Person {
        Person {
            first: FIRST_NAMES.choose(rng).copied().unwrap_or("Alex"),
            last: LAST_NAMES.choose(rng).copied().unwrap_or("Smith"),
        }
    }

    pub fn full_name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }

    /// A unique address per customer number `n` on each medium.
    pub fn phone(&self, n: u64) -> String {
        format!("+1555{:07}", 100_000 + n % 9_000_000)
    }

    pub fn social_handle(&self, n: u64) -> String {
        format!(
            "@{}{}{}",
            self.first.to_ascii_lowercase(),
            self.last.to_ascii_lowercase(),
            n
        )
    }

    pub fn email(&self, n: u64) -> String {
        format!(
            "{}.{}{}@example.com",
            self.first.to_ascii_lowercase(),
            self.last.to_ascii_lowercase(),
            n
        )
    }
}

/// What a customer contacts the center about, with both sides of the conversation.
#[derive(Debug)]
pub(crate) struct Topic {
    /// The `reason` answer of the agent's script.
    pub reason: &'static str,
    pub subject: &'static str,
    pub opening: &'static str,
    /// What the customer says next, one line per answer they get.
    pub follow_ups: &'static [&'static str],
    /// What the agent says, in order (the greeting comes before these).
    pub answers: &'static [&'static str],
    /// The memo the agent writes, a phrase at a time.
    pub memo: &'static [&'static str],
    /// Words by which the agent recognizes the topic in what a customer writes.
    pub keywords: &'static [&'static str],
}

pub(crate) const TOPICS: &[Topic] = &[
    Topic {
        reason: "delivery",
        subject: "Where is my order #48213?",
        opening: "Hi, my order #48213 hasn't arrived yet.",
        follow_ups: &[
            "It was supposed to come on Monday.",
            "The tracking page hasn't changed for three days.",
            "Great, thank you!",
        ],
        answers: &[
            "Let me check the tracking for you.",
            "The parcel is held at the local depot. I've asked them to dispatch it today.",
            "You'll get a text with the new delivery window this afternoon.",
        ],
        memo: &[
            "Order 48213 late.",
            " Held at depot,",
            " dispatch requested.",
        ],
        keywords: &[
            "order", "deliver", "parcel", "package", "tracking", "arrive", "shipping",
        ],
    },
    Topic {
        reason: "billing",
        subject: "Charged twice this month",
        opening: "Hello, I was charged twice for my subscription this month.",
        follow_ups: &[
            "Both charges are from the 3rd.",
            "Yes, the card ending in 4421.",
            "Perfect, thanks for sorting it out.",
        ],
        answers: &[
            "Sorry about that, let me look at your account.",
            "I can see the duplicate payment. Which card was it on?",
            "I've refunded the second charge; it takes 3 to 5 working days.",
        ],
        memo: &[
            "Duplicate charge on the 3rd.",
            " Refund issued",
            " (card 4421).",
        ],
        keywords: &["charge", "bill", "refund", "payment", "invoice", "paid"],
    },
    Topic {
        reason: "password",
        subject: "Can't log in",
        opening: "I can't log in to my account, the reset link doesn't work.",
        follow_ups: &["It says the link has expired.", "Got it, that worked."],
        answers: &[
            "Let me send you a fresh reset link.",
            "Done: the new link is valid for one hour.",
            "Glad it works now!",
        ],
        memo: &[
            "Reset link expired.",
            " Sent a new one,",
            " customer logged in.",
        ],
        keywords: &["password", "log in", "login", "sign in", "reset", "account"],
    },
    Topic {
        reason: "plan change",
        subject: "Upgrading my plan",
        opening: "Hi! I'd like to upgrade to the family plan.",
        follow_ups: &[
            "Four people, including me.",
            "From next month is fine.",
            "Sounds good.",
        ],
        answers: &[
            "Happy to help with that. How many people will be on the plan?",
            "The family plan covers up to five. Should it start now or next month?",
            "All set: the family plan starts on the 1st.",
        ],
        memo: &[
            "Upgrade to family plan",
            " (4 members)",
            " from next month.",
        ],
        keywords: &["plan", "upgrade", "subscription", "downgrade", "cancel"],
    },
    Topic {
        reason: "return",
        subject: "Returning a jacket",
        opening: "Hello, the jacket I ordered is too small. Can I return it?",
        follow_ups: &[
            "I ordered it two weeks ago.",
            "Can I exchange it for a large instead?",
            "Thanks a lot.",
        ],
        answers: &[
            "Of course, returns are free within 30 days.",
            "An exchange is even easier: I'll email you a prepaid label.",
            "The large will ship as soon as the return is scanned.",
        ],
        memo: &["Jacket too small,", " exchange to L,", " label emailed."],
        keywords: &[
            "return",
            "exchange",
            "size",
            "too small",
            "too big",
            "broken",
        ],
    },
    Topic {
        reason: "address",
        subject: "New delivery address",
        opening: "I moved last week, can you update my delivery address?",
        follow_ups: &["It's 12 Harbour Street, flat 3.", "Yes, that's right."],
        answers: &[
            "Sure, what is the new address?",
            "Updated. Your next order goes to 12 Harbour Street, flat 3.",
        ],
        memo: &["Address changed", " to 12 Harbour St, flat 3."],
        keywords: &["address", "moved", "moving"],
    },
    Topic {
        reason: "product question",
        subject: "Question about the X200 charger",
        opening: "Does the X200 come with a charger?",
        follow_ups: &["And does it work with the old one?", "OK, good to know."],
        answers: &[
            "It comes with a USB-C cable; the charger is sold separately.",
            "Yes, any USB-C charger of 20 W or more works.",
        ],
        memo: &["Asked about X200 accessories."],
        keywords: &["charger", "x200", "battery", "cable", "work with"],
    },
];

pub(crate) fn topic(rng: &mut impl Rng) -> &'static Topic {
    TOPICS.choose(rng).unwrap_or(&TOPICS[0])
}

/// What an agent answers when a customer's words match no known topic: listen, act, confirm.
pub(crate) const GENERAL: Topic = Topic {
    reason: "general",
    subject: "A question",
    opening: "",
    follow_ups: &[],
    answers: &[
        "Thanks for explaining. Let me look into that for you.",
        "I've checked it on our side and put a note on your account; you'll get a confirmation by email shortly.",
        "Is there anything else I can help with?",
    ],
    memo: &[
        "General question,",
        " looked into it,",
        " confirmation sent.",
    ],
    keywords: &[],
};

/// The topic a customer's message is about: a simulated customer's own lines first, then
/// the words in it; `None` if nothing matches.
pub(crate) fn topic_for(said: &str) -> Option<&'static Topic> {
    let said = said.trim();
    if said.is_empty() {
        return None;
    }
    if let Some(t) = TOPICS
        .iter()
        .find(|t| said.starts_with(t.opening) || t.follow_ups.contains(&said))
    {
        return Some(t);
    }
    let lower = said.to_lowercase();
    TOPICS
        .iter()
        .find(|t| t.keywords.iter().any(|k| lower.contains(k)))
}

/// Short answers to anything a customer adds once the agent has said what they had to say.
pub(crate) const MORE_ANSWERS: &[&str] = &[
    "Noted, I've added that to your case.",
    "Understood. Anything else on your mind?",
    "You're welcome!",
];

/// The agent's first words on a chat.
pub(crate) fn greeting(agent_first_name: &str, customer: &str) -> String {
    let first = customer.split_whitespace().next().unwrap_or(customer);
    let first = first.trim_start_matches('@');
    if first.is_empty() || first.starts_with(|c: char| c == '+' || c.is_ascii_digit()) {
        format!("Hi there, this is {agent_first_name}. Let me read your message.")
    } else {
        format!("Hi {first}, this is {agent_first_name}. Let me read your message.")
    }
}

/// `emma` → `Emma`.
pub(crate) fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub(crate) const CHAT_CLOSING: &str =
    "Is there anything else I can help with? Thanks for contacting us, have a nice day!";

pub(crate) const EMAIL_SIGNATURE: &str = "Kind regards,\nCustomer Care";

pub(crate) const CUSTOMER_BYE: &str = "That's all, thanks. Bye!";

/// Memo phrases for calls, whose topic the agent learns on the phone.
pub(crate) const CALL_MEMO: &[&str] = &[
    "Caller asked about",
    " an order,",
    " explained the next steps.",
];

pub(crate) const CALLBACK_MEMO: &str = "Called back after the call dropped.";
