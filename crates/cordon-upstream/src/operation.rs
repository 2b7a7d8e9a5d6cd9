//! The operations Cordon forwards, and which provider speaks which: a const table.

use cordon_policy::ProviderKind;

/// An API operation the gateway forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Embeddings.
    Embeddings,
    /// Anthropic Messages.
    Messages,
}

impl Operation {
    pub const ALL: [Operation; 3] = [Operation::Chat, Operation::Embeddings, Operation::Messages];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
            Operation::Messages => "messages",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which provider speaks which operation.
const SUPPORT: &[(ProviderKind, &[Operation])] = &[
    (ProviderKind::Openai, &[Operation::Chat, Operation::Embeddings]),
    (
        ProviderKind::AzureOpenai,
        &[Operation::Chat, Operation::Embeddings],
    ),
    (ProviderKind::Anthropic, &[Operation::Messages]),
    (
        ProviderKind::Echo,
        &[Operation::Chat, Operation::Embeddings, Operation::Messages],
    ),
];

/// Does `provider` serve `op`?
pub fn supports(provider: ProviderKind, op: Operation) -> bool {
    SUPPORT.iter().any(|(p, ops)| *p == provider && ops.contains(&op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_table() {
        use Operation::*;
        use ProviderKind::*;
        let yes = [
            (Openai, Chat),
            (Openai, Embeddings),
            (AzureOpenai, Chat),
            (AzureOpenai, Embeddings),
            (Anthropic, Messages),
            (Echo, Chat),
            (Echo, Embeddings),
            (Echo, Messages),
        ];
        for p in [Openai, AzureOpenai, Anthropic, Echo] {
            for op in Operation::ALL {
                assert_eq!(supports(p, op), yes.contains(&(p, op)), "{} {op}", p.as_str());
            }
        }
        assert_eq!(Chat.as_str(), "chat");
        assert_eq!(Embeddings.as_str(), "embeddings");
        assert_eq!(Messages.as_str(), "messages");
    }
}
