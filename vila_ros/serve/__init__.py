"""``vila-ros serve``: one in-process engine behind the OpenAI chat-completions protocol, for several robots."""
