#include "qtune/jinja/chat_render.h"

namespace qtune::jinja {

nlohmann::ordered_json alias_reasoning_fields(const nlohmann::ordered_json& messages) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& m : messages) {
    if (!m.is_object()) {
      out.push_back(m);
      continue;
    }
    const nlohmann::ordered_json* reasoning = nullptr;
    for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
      const auto it = m.find(key);
      if (it != m.end() && !it->is_null()) {
        reasoning = &*it;
        break;
      }
    }
    if (!reasoning) {
      out.push_back(m);
      continue;
    }
    // {"thinking": r, **message, "reasoning_content": r}: thinking first unless the message has its own.
    nlohmann::ordered_json a = nlohmann::ordered_json::object();
    a["thinking"] = *reasoning;
    for (const auto& [k, v] : m.items()) a[k] = v;
    a["reasoning_content"] = *reasoning;
    out.push_back(std::move(a));
  }
  return out;
}

Rendered ChatRenderer::render(const ChatInput& in, const RenderLimits& limits) const {
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  vars["messages"] = alias_reasoning_fields(in.messages);
  vars["tools"] = in.tools;
  vars["documents"] = in.documents;
  vars["add_generation_prompt"] = in.add_generation_prompt;
  for (const auto& [k, v] : in.extra.items()) vars[k] = v;
  return template_.render(vars, limits);
}

std::vector<GenerationSpan> ChatRenderer::assistant_spans(const ChatInput& in, const std::string& record) const {
  if (template_.has_generation()) return render(in).generation;
  const std::string full = render(in).text;
  std::vector<GenerationSpan> spans;
  for (size_t i = 0; i < in.messages.size(); ++i) {
    if (in.messages[i].value("role", "") != "assistant") continue;
    ChatInput before = in;
    before.messages = nlohmann::ordered_json(std::vector<nlohmann::ordered_json>(in.messages.begin(), in.messages.begin() + static_cast<std::ptrdiff_t>(i)));
    before.add_generation_prompt = true;
    ChatInput upto = in;
    upto.messages = nlohmann::ordered_json(std::vector<nlohmann::ordered_json>(in.messages.begin(), in.messages.begin() + static_cast<std::ptrdiff_t>(i + 1)));
    upto.add_generation_prompt = false;
    const std::string prompt = render(before).text;
    const std::string with_reply = render(upto).text;
    if (with_reply.compare(0, prompt.size(), prompt) != 0 || prompt.size() > with_reply.size())
      fail("{}: the chat template ({}) does not render messages[:{}] with a generation prompt as a prefix of "
           "messages[:{}], so the reply of message {} cannot be told apart (the template rewrites earlier turns, "
           "as Qwen3's drops old thinking blocks); mark the replies with {{% generation %}} in a copy of the template "
           "(data.chat_template: FILE.jinja), or train on the whole text",
           record, template_.name(), i, i + 1, i);
    if (full.compare(0, with_reply.size(), with_reply) != 0)
      fail("{}: the chat template ({}) does not render messages[:{}] as a prefix of the whole conversation, so the "
           "reply of message {} cannot be told apart; mark the replies with {{% generation %}} in a copy of the "
           "template (data.chat_template: FILE.jinja)",
           record, template_.name(), i + 1, i);
    spans.push_back({prompt.size(), with_reply.size()});
  }
  return spans;
}

}  // namespace qtune::jinja
