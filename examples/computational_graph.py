"""Chapter 5: backpropagation on a computational graph.

Each node computes forward and, given the gradient of the output, hands back the
gradient of each input (the chain rule, one node at a time). The shopping example:
2 apples at 100 and 3 oranges at 150, with 10% tax.

    apple_num * apple ----\\
                           add --- * tax --> price = 715
    orange_num * orange --/

    python examples/computational_graph.py

fastnn's layers (fastnn.Dense, fastnn.ReLU, ...) are these nodes grown up: forward(x) and
backward(dout), with what backward needs kept as attributes.
"""


class MulLayer:
    """out = x * y; dx = dout * y, dy = dout * x (each input gets the other one)."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dout):
        return dout * self.y, dout * self.x


class AddLayer:
    """out = x + y; the gradient passes through to both inputs unchanged."""

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout, dout


def buy_apples_and_oranges(apple=100, apple_num=2, orange=150, orange_num=3, tax=1.1):
    """(price, gradients): the forward pass, then backward from dprice = 1."""
    mul_apple, mul_orange, add_fruit, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()

    apple_price = mul_apple.forward(apple, apple_num)
    orange_price = mul_orange.forward(orange, orange_num)
    fruit_price = add_fruit.forward(apple_price, orange_price)
    price = mul_tax.forward(fruit_price, tax)

    dprice = 1
    dfruit_price, dtax = mul_tax.backward(dprice)
    dapple_price, dorange_price = add_fruit.backward(dfruit_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    return price, {"apple": dapple, "apple_num": dapple_num, "orange": dorange,
                   "orange_num": dorange_num, "tax": dtax}


def main():
    price, grads = buy_apples_and_oranges()
    print(f"price: {price:.1f}")
    for name, value in grads.items():
        print(f"  dprice/d{name:10s} = {value:.1f}")


if __name__ == "__main__":
    main()
