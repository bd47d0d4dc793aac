"""GRU4Rec beyond the conformance suite: the GRU reads only a row's real items, whatever the padding."""

from __future__ import annotations

import torch

from omnirec.models.gru4rec import GRU4RecConfig, GRU4RecNet


def test_states_do_not_depend_on_left_padding_and_match_a_plain_gru_over_the_items():
    torch.manual_seed(0)
    net = GRU4RecNet(20, GRU4RecConfig(d_model=8, n_layers=2, dropout=0.0)).eval()
    row = torch.tensor([[3, 7, 5]])
    padded = torch.tensor([[0, 0, 0, 3, 7, 5], [0, 0, 0, 0, 0, 9]])  # a second, shorter row shares the batch
    with torch.no_grad():
        alone, together = net(row), net(padded)
        plain, _ = net.gru(net.items(row))  # no padding at all: the reference (then the output LayerNorm)
        plain = net.norm(plain)
    torch.testing.assert_close(together[0, 3:], alone[0])
    torch.testing.assert_close(alone, plain)
    assert torch.equal(together[1, :5], torch.zeros(5, 8)), "padding positions hold no state"
