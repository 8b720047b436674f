#pragma once
// The choice behind `qtune quantize --method auto`: each linear has several ways to be stored (NF4, int8, GPTQ, AWQ,
// 16-bit), each with its bits per weight and the calibration loss it adds when that linear alone is stored so. The
// choice is a multiple-choice knapsack: every linear starts at its cheapest option, and the upgrade that removes the
// most loss per extra bit (over all linears, weighted by their parameters) is applied while the average stays within
// the budget. Upgrades run along each linear's lower convex hull of (bits, loss): an option that costs more and
// loses no less than another (dominated), or that lies above the hull, is never chosen.
#include <cstdint>
#include <string>
#include <vector>

namespace qtune::calib {

// The methods, by the names --methods and quant.methods take.
extern const std::vector<std::string> kAllMethods;  // nf4, int8, gptq, awq, 16bit
// "nf4,gptq" → {"nf4", "gptq"}; an unknown or repeated name is refused naming `what`.
std::vector<std::string> parse_methods(const std::string& list, const std::string& what);
void check_methods(const std::vector<std::string>& methods, const std::string& what);

struct MethodOption {
  std::string method;  // "nf4", "int8", "gptq", "awq", "16bit"
  double bits = 0;     // per weight, the store's own (scales and zeros counted)
  double loss = 0;     // calibration mean NLL with only this linear stored so, minus the dense model's
};

struct LinearOptions {
  std::string name;
  int64_t parameters = 0;
  std::vector<MethodOption> options;
};

struct MethodChoice {
  std::vector<size_t> chosen;  // per linear, the index of its option
  double average_bits = 0;     // parameter-weighted
  double loss = 0;             // the sum of the chosen options' losses (what the choice minimises)
};

// `what` names the budget in messages ("--budget-bits", "quant.budget_bits"). Refuses a budget below what every
// linear's cheapest option costs, and a linear with no option.
MethodChoice choose_methods(const std::vector<LinearOptions>& linears, double budget_bits,
                            const std::string& what = "--budget-bits");

}  // namespace qtune::calib
