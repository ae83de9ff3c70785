"""TieredEmbedder: table layout, taxonomy checks and label dropout."""
import pytest
import torch

from finediffusion.models import TieredEmbedder

SUB2SUPER = [0, 0, 1, 2, 2, 2]


def test_rows_per_tier():
    emb = TieredEmbedder(6, SUB2SUPER, embed_dim=8, null_prob=0.1)
    labels = torch.tensor([0, 2, 5])
    assert emb.embedding_table.num_embeddings == 6 + 3 + 1
    assert emb.rows(labels, 'sub').tolist() == [0, 2, 5]
    assert emb.rows(labels, 'super').tolist() == [6, 7, 8]
    assert emb.rows(labels, 'null').tolist() == [9, 9, 9]
    assert emb(labels, 'super').shape == (3, 8)
    assert torch.equal(emb(labels, 'super'),
                       emb.embedding_table(emb.rows(labels, 'super')))


def test_taxonomy_is_saved_with_the_model():
    emb = TieredEmbedder(6, SUB2SUPER, embed_dim=8)
    assert emb.state_dict()['sub2super'].tolist() == SUB2SUPER


@pytest.mark.parametrize('num_classes,sub2super,num_super,message', [
    (6, [0, 0, -1, 2, 2, 2], None, r'without a superclass.*\[2\]'),
    (6, [0, 0, 1, 2, 2], None, 'expected 6 entries'),
    (6, [0, 0, 1, 2, 2, 7], 3, r'subclasses \[5\] map to superclass ids '
     r'\[7\], out of range for 3'),
    (6, [0, 0, 1, 3, 3, 3], None, r'superclasses \[2\] have no subclass'),
])
def test_invalid_taxonomy_fails_at_construction(num_classes, sub2super,
                                                num_super, message):
    with pytest.raises(ValueError, match=message):
        TieredEmbedder(num_classes, sub2super, embed_dim=8,
                       num_superclasses=num_super)


def test_label_dropout_rates_in_training_only():
    torch.manual_seed(0)
    emb = TieredEmbedder(6, SUB2SUPER, embed_dim=8, super_prob=0.1,
                         null_prob=0.05)
    labels = torch.randint(0, 6, (200_000, ))
    rows = emb.tiered_rows(labels, emb.token_drop(labels))
    to_super = rows == emb.rows(labels, 'super')
    to_null = rows == emb.rows(labels, 'null')
    kept = rows == labels
    assert abs(to_super.float().mean().item() - 0.1) < 0.005
    assert abs(to_null.float().mean().item() - 0.05) < 0.005
    assert bool((to_super | to_null | kept).all())
    emb.eval()
    assert torch.equal(emb.tiered_rows(labels, emb.token_drop(labels)),
                       labels)


def test_no_null_row_by_default():
    emb = TieredEmbedder(6, SUB2SUPER, embed_dim=8)
    assert emb.embedding_table.num_embeddings == 9
    with pytest.raises(ValueError, match='no null row'):
        emb.rows(torch.tensor([0]), 'null')
