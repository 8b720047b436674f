#include "qtune/jinja/template.h"

namespace qtune::jinja {

Template::Template(const std::string& text, const std::string& name) : parsed_(parse_template(text, name)) {}

Rendered Template::render(const DictObj& variables, const RenderLimits& limits) const {
  return Interpreter(*parsed_, variables, limits).render();
}

Rendered Template::render(const nlohmann::ordered_json& variables, const RenderLimits& limits) const {
  if (variables.is_null()) return render(DictObj{}, limits);
  if (!variables.is_object()) throw TemplateError(ErrorKind::Type, "a template's variables must be a JSON object");
  const Value vars = from_json(variables);
  return render(vars.dict(), limits);
}

}  // namespace qtune::jinja
